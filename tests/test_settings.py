"""Configuration: environment over an optional TOML file; bad values refused at start."""

from __future__ import annotations

import pytest

from cards import PolicyError
from cds_service.settings import EngineSettings, ServiceSettings, SettingsError


def test_defaults_are_safe():
    """Loopback only, authentication on with no issuer trusted, no FHIR server trusted."""
    settings = ServiceSettings.from_env({})
    assert settings.bind == "127.0.0.1:8080"
    assert settings.auth.enabled and settings.auth.issuers == ()
    assert settings.fhir_server_allowlist == ()
    assert not settings.fetch_allow_http_loopback
    assert settings.store_url.startswith("sqlite:///")
    assert settings.workers >= 3
    assert settings.fetch_deadline < 1.0


def test_the_environment_wins_over_the_file(tmp_path):
    config = tmp_path / "tpi-cds.toml"
    config.write_text(
        'profile = "commercial"\n'
        "[policy]\nsession_cap = 5\nshow_criteria_met = false\n"
        '[service]\nbind = "0.0.0.0:9000"\ncors_origins = ["https://ehr.example.org"]\n'
        'database_url = "postgresql://tpi@db/tpi"\nfetch_deadline = 0.4\n',
        encoding="utf-8",
    )
    env = {
        "TPI_CDS_CONFIG": str(config),
        "TPI_CDS_BIND": "127.0.0.1:9100",
        "TPI_CDS_POLICY_SESSION_CAP": "6",
    }
    settings = ServiceSettings.from_env(env)
    assert settings.bind == "127.0.0.1:9100"
    assert settings.cors_origins == ("https://ehr.example.org",)
    assert settings.store_url == "postgresql://tpi@db/tpi"
    assert settings.fetch_deadline == 0.4
    engine = settings.engine.build_engine()
    assert engine.policy.name == "commercial"
    assert engine.policy.session_cap == 6
    assert engine.policy.show_criteria_met is False


def test_policy_overrides_as_one_json_object():
    engine = EngineSettings.from_env({"TPI_CDS_POLICY": '{"min_interval_days": 56}'}).build_engine()
    assert engine.policy.min_interval_days == 56


@pytest.mark.parametrize(
    ("env", "error", "words"),
    [
        ({"TPI_CDS_FETCH_DEADLINE": "soon"}, SettingsError, "FETCH_DEADLINE"),
        ({"TPI_CDS_WORKERS": "-1"}, SettingsError, "WORKERS"),
        ({"TPI_CDS_TIMEZONE": "Mars/Olympus"}, SettingsError, "time zone"),
        ({"TPI_CDS_POLICY": "[1]"}, SettingsError, "JSON object"),
        ({"TPI_CDS_CONFIG": "/nonexistent/tpi.toml"}, SettingsError, "cannot read"),
    ],
)
def test_bad_settings_are_refused_with_their_name(env, error, words):
    with pytest.raises(error, match=words):
        ServiceSettings.from_env(env)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"session_kap": 3}, "unknown policy setting"),
        ({"session_cap": "three"}, "must be int"),
        ({"clinical_relief": -0.3}, "negative"),
        ({"show_criteria_met": "perhaps"}, "must be bool"),
    ],
)
def test_bad_policy_overrides_are_refused(overrides, words):
    with pytest.raises(PolicyError, match=words):
        EngineSettings(policy_overrides=overrides).build_engine()


def test_an_unknown_profile_is_refused():
    with pytest.raises(PolicyError, match="medicare, commercial"):
        EngineSettings(profile="medicaid").build_engine()
