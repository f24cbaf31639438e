"""`tpi-cds report OUT_DIR`: the governance page, as a committee member would open it.

The page is built by the real command over the packaged examples and a SQLite feedback
store filled with several weeks of history, and opened in a real headless Chromium.
"""

from __future__ import annotations

import ast
import json
import shutil
from dataclasses import fields
from datetime import date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import insert

from cards.policy import PolicyProfile
from cds_service.cli import main
from cds_service.report import render_markdown
from cds_service.report.catalogue import RULES, RULES_BY_ID, value_set_rows
from cds_service.report.gallery import EXAMPLES, GalleryError, build_gallery, load_example
from cds_service.settings import EngineSettings, load_terminology
from cds_service.store import FeedbackEntry, FeedbackStore, card_counts_table
from conftest import VIGNETTES

CARDS_DIR = Path(__file__).parent.parent / "cards"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ALL_RULES = {rule.id for rule in RULES}
PATIENT_COMMENT = "Mrs Example-Patient declined, see note"


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def env(monkeypatch, tmp_path):
    """The command reads the service's settings: a clean environment, data under tmp_path."""
    for key in ("TPI_CDS_CONFIG", "TPI_CDS_DATABASE_URL", "TPI_CDS_PROFILE", "TPI_CDS_POLICY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TPI_CDS_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def run_report(out: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["report", str(out), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class Tables(HTMLParser):
    """The rows of the page's tables by table id, as text cells (what a reader sees)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.rules_in_gallery: set[str] = set()
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._section: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "section":
            self._section.append(attributes.get("id") or "")
        if tag == "table":
            self._table = attributes.get("id") or attributes.get("class") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        if "data-rule" in attributes and "gallery" in self._section:
            self.rules_in_gallery.add(attributes["data-rule"])

    def handle_endtag(self, tag):
        if tag == "section" and self._section:
            self._section.pop()
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> Tables:
    tables = Tables()
    tables.feed(html)
    return tables


def row(tables: Tables, table: str, label: str) -> list[str]:
    found = [r for r in tables.tables[table] if r and r[0] == label]
    assert len(found) == 1, f"{label!r} in {table}: {tables.tables[table]}"
    return found[0]


WEEKS = [date(2026, 10, 5) + timedelta(weeks=n) for n in range(6)]  # Mondays


def fill_store(url: str) -> None:
    """Six weeks of a realistic history: counts of cards sent, and feedback on them.

    Per week: 20 P1 cards, 5 S3 cards, 3 E1+E2 cards, 2 R1 cards sent. Feedback per week:
    P1 6 accepted, 4 snoozed (30 days), 2 declined; S3 3 overridden (benefit outweighs
    risk); E1+E2 1 accepted; R1 1 overridden with a free-text comment; and one accepted
    card the service no longer remembered. Week 4 (2026-10-26) is quiet: nothing at all.
    """
    store = FeedbackStore(url)
    store.create_schema()
    sent = [
        ("pt-integration", "P1", "info", 20),
        ("tpi-safety", "S3", "info", 5),
        ("tpi-eligibility", "E1 E2", "warning", 3),
        ("specialist-referral", "R1", "warning", 2),
    ]
    counts = []
    entries = []
    for week in WEEKS:
        if week == date(2026, 10, 26):
            continue
        for topic, rules, indicator, count in sent:
            counts.append(
                {
                    "day": (week + timedelta(days=1)).isoformat(),
                    "service_id": "tpi-order-select",
                    "topic": topic,
                    "rules": rules,
                    "indicator": indicator,
                    "count": count,
                }
            )
        stamp = datetime(week.year, week.month, week.day, 10, 30).isoformat() + "Z"

        def entry(topic, outcome, rules, indicator, reason=None, comment=None, stamp=stamp):
            override = None
            if reason is not None:
                override = {"reason": {"system": "urn:tpi-cds:override", **reason}}
                if comment:
                    override["userComment"] = comment
            return FeedbackEntry(
                service_id="tpi-order-select",
                card_uuid="00000000-0000-8c51-8000-000000000000",
                card_topic=topic,
                outcome=outcome,
                accepted_suggestions=[{"id": "x"}] if outcome == "accepted" else None,
                override_reason=override,
                outcome_timestamp=stamp,
                card_rules=rules,
                card_indicator=indicator,
            )

        snooze = {"code": "snooze-30", "display": "Remind me in 30 days"}
        declined = {"code": "patient-declined", "display": "Patient declined"}
        benefit = {"code": "benefit-outweighs-risk", "display": "Benefit outweighs risk"}
        judgment = {"code": "clinical-judgment", "display": "Clinical judgment"}
        entries += [entry("pt-integration", "accepted", ["P1"], "info")] * 6
        entries += [entry("pt-integration", "overridden", ["P1"], "info", snooze)] * 4
        entries += [entry("pt-integration", "overridden", ["P1"], "info", declined)] * 2
        entries += [entry("tpi-safety", "overridden", ["S3"], "info", benefit)] * 3
        entries += [entry("tpi-eligibility", "accepted", ["E1", "E2"], "warning")]
        entries += [
            entry("specialist-referral", "overridden", ["R1"], "warning", judgment, PATIENT_COMMENT)
        ]
        entries += [entry("pt-integration", "accepted", None, None)]
    with store.engine.begin() as connection:
        connection.execute(insert(card_counts_table), counts)
    store.add(entries)
    store.dispose()


def store_url(tmp_path: Path) -> str:
    """Where the service keeps its SQLite store for TPI_CDS_DATA_DIR=tmp_path/data."""
    return f"sqlite:///{(tmp_path / 'data').resolve() / 'tpi-cds.sqlite3'}"


# ----------------------------------------------------------------------------- catalogue


def emitted_rule_ids() -> set[str]:
    """Every rule id a ``Finding(...)`` in the engine's code can carry."""
    found = set()
    for path in CARDS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "Finding"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(node.args[0].value)
    return found


def test_catalogue_lists_exactly_the_rules_the_engine_can_emit():
    emitted = emitted_rule_ids()
    assert len(emitted) == 22
    assert emitted == set(RULES_BY_ID)
    assert len(RULES) == len(RULES_BY_ID)


def test_catalogue_names_real_value_sets_and_profile_settings():
    terminology = load_terminology(None)
    settings = {f.name for f in fields(PolicyProfile)}
    for rule in RULES:
        assert rule.value_sets, rule.id
        assert set(rule.value_sets) <= set(terminology), rule.id
        assert set(rule.thresholds) <= settings, rule.id
        assert set(rule.indicators) <= {"info", "warning", "critical"}, rule.id
    # Every packaged list is read by a rule, or picks the payer profile.
    rows = {r.id: r for r in value_set_rows(terminology, None)}
    assert set(rows) == set(terminology)
    assert all(r.rules or r.also for r in rows.values())
    assert rows["payer-medicare"].also == "the patient's payer profile"
    critical = {rule.id for rule in RULES if "critical" in rule.indicators}
    assert critical == {"S1", "S2"}  # clinical rules page, section 5


# ----------------------------------------------------------------------------- gallery


def test_examples_are_packaged_copies_of_test_vignettes():
    packaged = Path(__file__).parent.parent / "cds_service" / "report" / "examples"
    assert {p.stem for p in packaged.glob("*.json")} == {e.name for e in EXAMPLES}
    for example in EXAMPLES:
        vignette = json.loads((VIGNETTES / f"{example.name}.json").read_text(encoding="utf-8"))
        assert load_example(example.name) == vignette, example.name


@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_gallery_fires_every_rule_whatever_the_site_default_profile(profile):
    gallery = build_gallery(EngineSettings(profile=profile))
    fired = {rule for shown in gallery for card in shown.cards for rule in card.rules}
    assert fired == ALL_RULES
    # E0 is off by default; only the example that says so turns it on.
    e0 = [shown.example.name for shown in gallery for c in shown.cards if "E0" in c.rules]
    assert e0 == ["pt-p1-repeat-tpi-no-therapy"]


def test_examples_are_the_fewest_that_fire_every_rule():
    """Dropping any one example loses a rule under one of the default profiles: none is
    there for decoration (the Medicare-coverage one keeps E3 and R2 on commercial sites)."""
    fired = {}
    for profile in ("medicare", "commercial"):
        for shown in build_gallery(EngineSettings(profile=profile)):
            rules = {rule for card in shown.cards for rule in card.rules}
            fired[(profile, shown.example.name)] = rules
    for left_out in EXAMPLES:
        lost = [
            profile
            for profile in ("medicare", "commercial")
            if set().union(
                *(r for (p, name), r in fired.items() if p == profile and name != left_out.name)
            )
            != ALL_RULES
        ]
        assert lost, f"{left_out.name} adds no rule"


def test_a_configuration_that_hides_a_rule_fails_loudly(env, capsys):
    config = env / "site.toml"
    config.write_text("[policy]\nsession_cap = 10\n", encoding="utf-8")
    with pytest.raises(GalleryError, match=r"E3, R2"):
        build_gallery(EngineSettings(policy_overrides={"session_cap": 10}))
    out = env / "out"
    code, stdout, stderr = run_report(out, "--config", str(config), capsys=capsys)
    assert code == 2
    assert stdout == ""
    assert "report not written: no example fires E3, R2" in stderr
    assert "session_cap" in stderr
    assert not (out / "index.html").exists()


# ----------------------------------------------------------------------------- the page


def test_without_a_store_the_page_still_has_gallery_and_catalogue(env, capsys):
    out = env / "report"
    code, stdout, stderr = run_report(out, capsys=capsys)
    assert code == 0, stderr
    assert stdout.strip() == str(out / "index.html")
    html = (out / "index.html").read_text(encoding="utf-8")
    page = parse(html)
    assert "No feedback store" in html
    assert page.rules_in_gallery == ALL_RULES
    assert {r[0] for r in page.tables["catalogue"][1:]} == ALL_RULES
    assert row(page, "value-sets", "imaging-guidance")[2] == "2"
    assert row(page, "value-sets", "imaging-guidance")[5] == "packaged"
    # E0's switch belongs to its example, not to the site.
    assert "For this example only: <code>show_criteria_met = true</code>" in html
    assert "show_criteria_met</code> = true (this example only; at this site false)" in html
    assert "site override" not in html
    # Self-contained: no script, no stylesheet or image fetched from anywhere.
    assert "<script" not in html
    assert "<link" not in html
    assert "src=" not in html.replace('img-src data:"', "")


def test_site_overrides_and_value_sets_are_shown_where_they_apply(env, capsys):
    folder = env / "valuesets"
    folder.mkdir()
    packaged = json.loads(
        (CARDS_DIR / "valuesets" / "imaging-guidance.json").read_text(encoding="utf-8")
    )
    site = dict(packaged, title="<b>Site</b> imaging guidance", id="site-imaging")
    site["expansion"] = dict(packaged["expansion"], contains=packaged["expansion"]["contains"][:1])
    site["expansion"]["total"] = 1
    (folder / "imaging.json").write_text(json.dumps(site), encoding="utf-8")
    config = env / "site.toml"
    config.write_text(
        f'profile = "commercial"\nvalueset_dir = "{folder}"\n'
        "[policy]\nmin_interval_days = 50\n[policy.commercial]\nsession_cap = 3\n",
        encoding="utf-8",
    )
    out = env / "report"
    code, _, stderr = run_report(out, "--config", str(config), capsys=capsys)
    assert code == 0, stderr
    html = (out / "index.html").read_text(encoding="utf-8")
    page = parse(html)
    imaging = row(page, "value-sets", "imaging-guidance")
    assert imaging[1] == "<b>Site</b> imaging guidance"  # shown as text, not markup
    assert "&lt;b&gt;Site&lt;/b&gt;" in html
    assert imaging[2] == "1"
    assert imaging[5] == "replaced by the site (imaging.json)"
    assert row(page, "overrides", "every profile") == [
        "every profile",
        "min_interval_days",
        "50",
    ]
    assert row(page, "overrides", "Commercial") == ["Commercial", "session_cap", "3"]
    # The catalogue shows the values in force per profile.
    e4 = row(page, "catalogue", "E4")
    assert e4[5] == "min_interval_days 50 / 50"
    # Under the E4 card: the value in force and the packaged one it replaced.
    assert "min_interval_days</code> = 50 (site override; packaged 60)" in html
    assert "Site default profile: <strong>Commercial</strong>" in html


def test_markdown_is_rendered_and_card_text_stays_text():
    html = str(
        render_markdown(
            "**Bleeding risk**: <script>alert(1)</script>\n\n- [a](javascript:alert(1))\n- b"
        )
    )
    assert "<strong>Bleeding risk</strong>" in html
    assert "<li>" in html
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    assert 'href="javascript' not in html


def test_analytics_per_topic_per_rule_reasons_and_weekly_trend(env, capsys):
    fill_store(store_url(env))
    out = env / "report"
    code, _, stderr = run_report(out, capsys=capsys)
    assert code == 0, stderr
    html = (out / "index.html").read_text(encoding="utf-8")
    page = parse(html)
    header = page.tables["per-topic"][0]
    assert header == ["", "Sent", "Accepted", "Overridden", "of which snoozed", "No feedback"]
    # 5 active weeks: P1 sent 100; accepted 30 + 5 unremembered; 30 overridden, 20 snoozed.
    assert row(page, "per-topic", "Physical therapy with TPI") == [
        "Physical therapy with TPI",
        "100",
        "35 35%",
        "30 30%",
        "20 20%",
        "35",
    ]
    assert row(page, "per-topic", "TPI safety") == [
        "TPI safety",
        "25",
        "0 0%",
        "15 60%",
        "0 0%",
        "10",
    ]
    assert row(page, "per-rule", "P1")[1:4] == ["100", "30 30%", "30 30%"]
    # A card resting on two rules counts for each.
    assert row(page, "per-rule", "E1")[1:3] == ["15", "5 33%"]
    assert row(page, "per-rule", "E2")[1:3] == ["15", "5 33%"]
    assert row(page, "per-rule", "(card not remembered)")[1:3] == ["0", "5 —"]
    reasons = page.tables["override-reasons"][1:]
    assert ["Physical therapy with TPI", "Remind me in 30 days snooze-30", "20"] in reasons
    assert ["Physical therapy with TPI", "Patient declined patient-declined", "10"] in reasons
    assert ["TPI safety", "Benefit outweighs risk benefit-outweighs-risk", "15"] in reasons
    # Every week from the first to the last, the quiet one included.
    weeks = [r[0] for r in page.tables["per-week"][1:]]
    assert weeks == [w.isoformat() for w in WEEKS]
    assert row(page, "per-week", "2026-10-26")[1:3] == ["0", "0 —"]
    assert row(page, "per-week", "2026-10-05")[1] == "30"
    # The chart is drawn into the page itself.
    assert html.count("<svg") == 1
    assert "Cards per week" in html
    # A clinician's free-text comment may name a patient: counted, never shown.
    assert PATIENT_COMMENT not in html
    assert "5 overrides carried a free-text comment" in html


# ----------------------------------------------------------------------------- browser


def test_the_page_in_a_real_browser(env, capsys):
    """Chromium opens the page from disk: no console errors, no requests, every rule shown."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), f"{CHROMIUM} is needed (apt-get install chromium)"
    fill_store(store_url(env))
    out = env / "report"
    code, _, stderr = run_report(out, capsys=capsys)
    assert code == 0, stderr
    page_url = (out / "index.html").resolve().as_uri()
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"{m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_url, wait_until="load")
            rules = set(page.locator("#gallery [data-rule]").all_inner_texts())
            shown_cards = page.locator("#gallery article.cds-card").count()
            critical = page.locator("#gallery article.indicator-critical")
            summary = critical.first.locator(".summary").inner_text()
            chart = page.locator("#analytics figure.chart svg")
            chart_box = chart.bounding_box()
            snoozed = page.locator("#per-topic tr", has_text="Physical therapy").inner_text()
            page.screenshot(path=str(env / "report-top.png"))
            page.screenshot(path=str(env / "report-full.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert requests == [page_url]
    assert rules == ALL_RULES
    assert shown_cards == sum(len(shown.cards) for shown in build_gallery(EngineSettings()))
    assert "do not perform the trigger point injection" in summary
    assert chart_box is not None and chart_box["width"] > 600 and chart_box["height"] > 150
    assert "20" in snoozed
    assert (env / "report-top.png").stat().st_size > 20_000
    assert (env / "report-full.png").stat().st_size > (env / "report-top.png").stat().st_size


def test_a_store_from_before_card_counts_still_reports_its_feedback(env, capsys):
    """A store created by an earlier release has feedback but no table of cards sent."""
    url = store_url(env)
    fill_store(url)
    store = FeedbackStore(url)
    card_counts_table.drop(store.engine)
    store.dispose()
    out = env / "report"
    code, _, stderr = run_report(out, capsys=capsys)
    assert code == 0, stderr
    html = (out / "index.html").read_text(encoding="utf-8")
    page = parse(html)
    assert "This store has no table of cards sent: only feedback is counted." in html
    assert row(page, "per-topic", "TPI safety") == ["TPI safety", "—", "0 —", "15 —", "0 —", "—"]
