"""The patient record: messy prefetch in, only the resources the rules read, typed."""

from __future__ import annotations

import json
from decimal import Decimal

from cards import PatientRecord, resources_in
from cards.reading import When, format_number, format_percent
from cds_service.settings import load_terminology
from conftest import TESTS_DIR

MESSY = json.loads((TESTS_DIR / "fixtures" / "messy-prefetch.json").read_text(encoding="utf-8"))


def build(prefetch: dict) -> PatientRecord:
    resources = [r for value in prefetch.values() for r in resources_in(value)]
    return PatientRecord.from_resources("messy-1", resources, load_terminology(None))


def test_operation_outcomes_nulls_and_junk_entries_are_not_data():
    kinds = [r["resourceType"] for value in MESSY.values() for r in resources_in(value)]
    assert "OperationOutcome" not in kinds
    assert kinds.count("Condition") == 3
    assert "Encounter" in kinds  # other types pass through; the record ignores them


def test_unknown_fields_are_dropped_not_fatal():
    """A vendor field at top level or inside a coding must not cost us the diagnosis."""
    record = build(MESSY)
    ids = [c.id for c in record.conditions]
    assert "myalgia-neck" in ids
    myalgia = next(c for c in record.conditions if c.id == "myalgia-neck")
    assert myalgia.code.coding[0].code == "M7912"


def test_an_invalid_resource_is_skipped_and_counted():
    record = build(MESSY)
    assert "broken-status" not in [c.id for c in record.conditions]
    assert record.skipped["Condition"] == 1


def test_only_resources_a_rule_reads_are_kept():
    """Hypertension and body weight are read past, not validated (the work follows the rules)."""
    record = build(MESSY)
    assert [c.id for c in record.conditions] == ["myalgia-neck"]
    assert [o.id for o in record.observations] == ["pain-decimal"]
    assert record.read == 6
    assert record.kept == 2


def test_oid_systems_and_undotted_icd_codes_match_value_sets():
    terminology = load_terminology(None)
    qualifying = terminology["qualifying-diagnoses"]
    assert qualifying.contains("urn:oid:2.16.840.1.113883.6.90", "M7912")
    assert qualifying.contains("http://hl7.org/fhir/sid/icd-10-cm", "g44.209")
    assert not qualifying.contains("http://hl7.org/fhir/sid/icd-10-cm", "M79.7")
    assert not qualifying.contains("http://snomed.info/sct", "M79.12")


def test_decimal_scores_keep_their_recorded_value():
    record = build(MESSY)
    value = record.observations[0].valueQuantity.value
    assert value == Decimal("3.74")
    assert format_number(value) == "3.74"
    assert format_number(Decimal("8.0")) == "8"
    assert format_number(Decimal("10")) == "10"
    assert format_percent(0.125) == "12 %"


def test_a_datetime_counts_on_its_own_calendar_date():
    from datetime import date, datetime, timedelta, timezone

    late_evening = datetime(2026, 7, 26, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert When.of(late_evening).day == date(2026, 7, 26)


def test_partial_dates_resolve_to_their_last_possible_day_but_never_after_today():
    from datetime import date

    assert When.of("2026-02").day == date(2026, 2, 28)
    assert When.of("2026-11", today=date(2026, 11, 23)).day == date(2026, 11, 23)
    assert When.of("2025").day == date(2025, 12, 31)
    assert not When.of("2025").precise
    assert When.of("2026-13") is None
