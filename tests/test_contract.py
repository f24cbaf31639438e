"""Contract tests: discovery and every card this project produces, against CDS Hooks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.services import discovery_document
from cds_service.settings import load_terminology
from conftest import SHARED, VIGNETTES, assert_well_formed, evaluate, load_vignette

OPENAPI = SHARED / "spec" / "cds-hooks-openapi-1.1.yaml"
ALLOWED_TOKENS = {
    "{{context.patientId}}",
    "{{context.encounterId}}",
    "{{context.userId}}",
    "{{userPractitionerId}}",
    "{{userPractitionerRoleId}}",
}
ALLOWED_SEARCH_PARAMETERS = {"patient", "code", "status", "_count", "_sort"}
TOPICS = {"tpi-safety", "tpi-eligibility", "pt-integration", "specialist-referral"}
# Rules page section 4: override reasons per topic, only those that make sense there.
OVERRIDE_CODES = {
    "tpi-safety": {"benefit-outweighs-risk", "already-addressed", "information-inaccurate"},
    "tpi-eligibility": {"payer-exception", "documented-elsewhere", "clinical-judgment"},
    "pt-integration": {
        "patient-declined",
        "addressed-elsewhere",
        "clinical-judgment",
        "snooze-30",
        "snooze-90",
    },
    "specialist-referral": {
        "patient-declined",
        "addressed-elsewhere",
        "clinical-judgment",
        "snooze-30",
        "snooze-90",
    },
}


@pytest.fixture(scope="module")
def openapi_schemas() -> dict[str, Any]:
    if not OPENAPI.is_file():
        pytest.skip(f"{OPENAPI} is absent (a bare clone): no OpenAPI description to test against")
    import yaml

    return yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))["components"]["schemas"]


def validator(schemas: dict[str, Any], name: str) -> Any:
    import jsonschema

    schema = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


def all_vignette_names() -> list[str]:
    return sorted(p.stem for p in VIGNETTES.glob("*.json"))


def test_discovery_matches_the_openapi_description(openapi_schemas):
    document = discovery_document(load_terminology(None))
    errors = list(validator(openapi_schemas, "CdsServiceInformation").iter_errors(document))
    assert errors == []
    hooks = {s["id"]: s["hook"] for s in document["services"]}
    assert hooks == {
        "tpi-order-select": "order-select",
        "tpi-order-sign": "order-sign",
        "tpi-patient-view": "patient-view",
    }
    for service in document["services"]:
        assert service["title"] and service["description"] and service["usageRequirements"]


def test_prefetch_templates_keep_to_what_ehrs_support():
    """Reads and token/reference searches only: an EHR must be able to fill every key."""
    for service in discovery_document(load_terminology(None))["services"]:
        prefetch = service["prefetch"]
        assert {
            "patient",
            "conditions",
            "procedures",
            "observations",
            "serviceRequests",
            "carePlans",
            "coverage",
            "practitionerRole",
        } <= set(prefetch)
        if service["hook"] != "patient-view":
            assert {"medications", "allergies"} <= set(prefetch)
        for template in prefetch.values():
            tokens = set(re.findall(r"\{\{[^}]*\}\}", template))
            assert tokens <= ALLOWED_TOKENS, template
            path, _, query = template.partition("?")
            assert re.fullmatch(r"[A-Z][A-Za-z]+(/\{\{[^}]+\}\})?", path), template
            for name, _ in parse_qsl(query):
                assert name in ALLOWED_SEARCH_PARAMETERS, template


# Rules page section 1: pain scores, HbA1c, pregnancy status, INR and platelet count.
OBSERVATION_CODES = {
    "72514-3", "38208-5", "75893-8",  # pain scores
    "4548-4",  # HbA1c (S5)
    "82810-3",  # pregnancy status (S6)
    "6301-6", "34714-6", "46418-0",  # INR (S3)
    "777-3", "26515-7", "778-1",  # platelet count (S3, S4)
}  # fmt: skip


def test_observation_prefetch_asks_only_for_the_codes_the_rules_read():
    for service in discovery_document(load_terminology(None))["services"]:
        template = service["prefetch"]["observations"]
        codes = set(re.findall(r"loinc\.org\|([0-9-]+)", template))
        assert codes == OBSERVATION_CODES, service["id"]


def test_coverage_prefetch_asks_for_the_patients_active_coverage():
    """Section 2b: Coverage?patient={{context.patientId}}&status=active, on every service."""
    for service in discovery_document(load_terminology(None))["services"]:
        template = service["prefetch"]["coverage"]
        path, _, query = template.partition("?")
        assert path == "Coverage", service["id"]
        assert sorted(parse_qsl(query)) == [
            ("patient", "{{context.patientId}}"),
            ("status", "active"),
        ]


def requests_under_test() -> list[tuple[str, dict[str, Any]]]:
    cases = [(name, load_vignette(name)) for name in all_vignette_names()]
    example = SHARED / "examples" / "order-select-request.json"
    if example.is_file():
        import json

        cases.append(("shared-example", json.loads(example.read_text(encoding="utf-8"))))
    return cases


def assert_no_empty_optional(value: Any, path: str = "") -> None:
    """CDS Hooks: no null, "", [] or {} in optional fields ("cards": [] is the exception)."""
    if isinstance(value, dict):
        assert value, f"empty object at {path}"
        for key, item in value.items():
            assert item is not None, f"null at {path}.{key}"
            assert_no_empty_optional(item, f"{path}.{key}")
    elif isinstance(value, list):
        assert value, f"empty list at {path}"
        for index, item in enumerate(value):
            assert_no_empty_optional(item, f"{path}[{index}]")
    elif isinstance(value, str):
        assert value.strip(), f"empty string at {path}"


@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_every_card_is_valid_cds_hooks(openapi_schemas, profile):
    check = validator(openapi_schemas, "CdsResponse")
    cases = requests_under_test()
    assert len(cases) >= 10, "expected the vignette library to be present"
    for name, request in cases:
        response = evaluate(request, profile=profile)
        drafts = {
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in request["context"].get("draftOrders", {}).get("entry", [])
        }
        assert list(check.iter_errors(response)) == [], name
        topics = [c["source"]["topic"]["code"] for c in response["cards"]]
        assert len(topics) == len(set(topics)), f"{name}: two cards for one topic"
        uuids = []
        for card in response["cards"]:
            assert_well_formed(card)
            assert_no_empty_optional(card, name)
            assert len(card["summary"]) < 140, name
            assert card["source"]["topic"]["system"] == "urn:tpi-cds:topic"
            assert card["source"]["topic"]["code"] in TOPICS
            assert card["indicator"] in ("info", "warning", "critical")
            if card["indicator"] == "critical":
                assert card["source"]["topic"]["code"] == "tpi-safety", name
            assert all(link["url"].startswith("https://") for link in card["links"])
            assert all(reason["display"] for reason in card["overrideReasons"])
            topic = card["source"]["topic"]["code"]
            codes = [reason["code"] for reason in card["overrideReasons"]]
            assert set(codes) == OVERRIDE_CODES[topic], (name, topic, codes)
            rules = card["extension"]["tpi-rules"]
            assert rules and rules == sorted(set(rules)), name
            uuids.append(card["uuid"])
            assert ("suggestions" in card) == ("selectionBehavior" in card), name
            if "suggestions" in card:
                several = topic == "tpi-safety" and len(card["suggestions"]) > 1
                expected = "any" if several else "at-most-one"
                assert card["selectionBehavior"] == expected, (name, topic)
            for suggestion in card.get("suggestions", []):
                uuids.append(suggestion["uuid"])
                for action in suggestion["actions"]:
                    if action["type"] == "create":
                        ServiceRequest.model_validate(action["resource"])
                        assert action["resource"]["subject"]["reference"] == (
                            f"Patient/{request['context']['patientId']}"
                        )
                    else:
                        # Version 2 deletes TPI drafts (S1, E3-E5) and MedicationRequest drafts
                        # (the anesthetic for S2, the steroid for S5/S6): always a draft order
                        # of this very request.
                        assert action["type"] == "delete"
                        assert re.fullmatch(
                            r"(ServiceRequest|MedicationRequest)/[A-Za-z0-9\-.]+",
                            action["resourceId"],
                        )
                        assert action["resourceId"] in drafts, (name, action["resourceId"])
        assert len(uuids) == len(set(uuids)), name


def test_cards_render_as_the_json_the_service_sends():
    """The response text has no NaN/Infinity and round-trips exactly."""
    import json

    from cds_service.evaluation import response_json

    def reject(constant: str) -> None:
        raise AssertionError(f"non-JSON constant {constant} in a response")

    for name, request in requests_under_test():
        response = evaluate(request)
        assert json.loads(response_json(response), parse_constant=reject) == response, name


def test_vignette_folder_exists():
    assert Path(VIGNETTES).is_dir()
