"""Alert burden: how many cards, and how many interruptive ones, a clinician sees per TPI order.

Version 2 of the rules was written because version 1 interrupted too often (rules page,
section 7). This module measures the burden on three sets of TPI orders and asserts what a
clinician would notice, not tuned numbers:

1. every vignette in tests/vignettes/ whose request is an order hook with a TPI order;
2. every Synthea patient in ../shared/fixtures/synthea-r4, given a TPI order (a bare clone
   skips these, with the reason);
3. the same Synthea patients, the TPI order carrying reasonCode ICD-10-CM M79.12.

Run with ``pytest tests/test_alert_burden.py -s`` to see, for each set: TPI orders, cards
per order, interruptive (warning or critical) cards per order, the share of orders with no
interruptive card, and per topic how often it fires and at which indicator; each set ends
with a one-line summary.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_synthea import SYNTHEA, order_select_for, synthea_files

from cards import Terminology
from conftest import TODAY, TOPICS, VIGNETTES, assert_well_formed, evaluate, load_vignette

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
INTERRUPTIVE = ("warning", "critical")
TOPIC_ORDER = ("tpi-safety", "tpi-eligibility", "pt-integration", "specialist-referral")
LIPID_PANEL = {
    "coding": [
        {
            "system": "http://loinc.org",
            "code": "24331-1",
            "display": "Lipid 1996 panel - Serum or Plasma",
        }
    ],
    "text": "Lipid panel, fasting",
}
MYALGIA_NECK = {
    "coding": [
        {"system": ICD, "code": "M79.12", "display": "Myalgia of auxiliary muscles, head and neck"}
    ],
    "text": "Myalgia of auxiliary muscles, head and neck",
}
# Triamcinolone acetonide 40 MG/ML injectable suspension: a code of corticosteroids.json.
TRIAMCINOLONE = ("1085754", "Triamcinolone Acetonide 40 MG/ML Injectable Suspension")
NORMAL_PREGNANCY = "72892002"
# Synthea CarePlan categories of general-fitness plans (seen in the fixtures): diabetes
# self-management, hyperlipidemia clinical management, heart failure self-management.
FITNESS_PLANS = {"698360004", "736285004", "735984001"}


# --------------------------------------------------------------------------- measuring


def terminology() -> Terminology:
    return Terminology.load()


def tpi_order_count(request: dict[str, Any]) -> int:
    """TPI orders of a request as the rules page defines them (section 1): a draft
    ServiceRequest coded in tpi-procedures; on order-select only the selected ones."""
    if request.get("hook") not in ("order-select", "order-sign"):
        return 0
    tpi = terminology()["tpi-procedures"]
    context = request["context"]
    selected = set(context.get("selections") or [])
    count = 0
    for entry in context.get("draftOrders", {}).get("entry", []):
        order = entry["resource"]
        if order["resourceType"] != "ServiceRequest":
            continue
        codings = order.get("code", {}).get("coding", [])
        if not any(tpi.contains(c.get("system"), c.get("code")) for c in codings):
            continue
        if request["hook"] == "order-select" and f"ServiceRequest/{order['id']}" not in selected:
            continue
        count += 1
    return count


def rules(card: dict[str, Any]) -> list[str]:
    return card["extension"]["tpi-rules"]


@dataclass
class Burden:
    """The cards of a set of TPI orders, counted as a clinician meets them."""

    name: str
    responses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, label: str, response: dict[str, Any]) -> None:
        self.responses.append((label, response))

    @property
    def orders(self) -> int:
        return len(self.responses)

    def cards(self) -> list[dict[str, Any]]:
        return [c for _, r in self.responses for c in r["cards"]]

    def interruptive(self) -> list[dict[str, Any]]:
        return [c for c in self.cards() if c["indicator"] in INTERRUPTIVE]

    def quiet_orders(self) -> int:
        """Orders whose response holds no warning or critical card."""
        return sum(
            1
            for _, r in self.responses
            if not any(c["indicator"] in INTERRUPTIVE for c in r["cards"])
        )

    def per_topic(self) -> dict[str, Counter]:
        found: dict[str, Counter] = {t: Counter() for t in TOPIC_ORDER}
        for c in self.cards():
            found[c["source"]["topic"]["code"]][c["indicator"]] += 1
        return found

    def per_rule(self) -> Counter:
        return Counter(rule for c in self.cards() for rule in rules(c))

    def summary(self) -> str:
        n = max(self.orders, 1)
        return (
            f"alert burden [{self.name}]: {self.orders} TPI orders, "
            f"{len(self.cards()) / n:.2f} cards/order, "
            f"{len(self.interruptive()) / n:.2f} interruptive/order, "
            f"{100 * self.quiet_orders() / n:.0f} % of orders with no interruptive card"
        )

    def report(self) -> str:
        n = max(self.orders, 1)
        lines = [
            "",
            f"== Alert burden: {self.name}",
            f"TPI orders: {self.orders}",
            f"cards per order: {len(self.cards()) / n:.2f}",
            f"interruptive (warning or critical) cards per order: {len(self.interruptive()) / n:.2f}",
            f"orders with no interruptive card: {self.quiet_orders()} of {self.orders} "
            f"({100 * self.quiet_orders() / n:.0f} %)",
            f"{'topic':<22}{'fires':>14}{'info':>8}{'warning':>9}{'critical':>10}",
        ]
        for topic, counts in self.per_topic().items():
            fired = sum(counts.values())
            lines.append(
                f"{topic:<22}{fired:>6} ({100 * fired / n:>3.0f} %)"
                f"{counts['info']:>8}{counts['warning']:>9}{counts['critical']:>10}"
            )
        lines.append("rules: " + ", ".join(f"{r} {k}" for r, k in sorted(self.per_rule().items())))
        lines.append(self.summary())
        return "\n".join(lines)


def assert_what_a_clinician_would_notice(burden: Burden) -> None:
    """At most one card per topic; a critical S1 card alone; every card well formed."""
    for label, response in burden.responses:
        seen = [c["source"]["topic"]["code"] for c in response["cards"]]
        assert len(seen) == len(set(seen)), f"{label}: two cards of one topic"
        for c in response["cards"]:
            assert_well_formed(c)
            assert c["source"]["topic"]["code"] in TOPICS
            if c["indicator"] == "critical" and "S1" in rules(c) and "S2" not in rules(c):
                assert len(response["cards"]) == 1, f"{label}: critical S1 card not alone"


def measure(name: str, requests: list[tuple[str, dict[str, Any]]]) -> Burden:
    burden = Burden(name)
    for label, request in requests:
        burden.add(label, evaluate(request))
    return burden


# --------------------------------------------------------------------------- the three sets


def vignette_orders() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(VIGNETTES.glob("*.json")):
        request = load_vignette(path.stem)
        if tpi_order_count(request):
            found.append((path.stem, request))
    return found


def synthea_bundles() -> list[tuple[str, dict[str, Any]]]:
    if not synthea_files():
        pytest.skip(f"{SYNTHEA} is absent (a bare clone): no Synthea patients to measure")
    return [
        (path.stem.split("_")[0] + "_" + path.stem.split("_")[1], read(path))
        for path in synthea_files()
    ]


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def tpi_draft(request: dict[str, Any]) -> dict[str, Any]:
    (tpi,) = [
        e["resource"]
        for e in request["context"]["draftOrders"]["entry"]
        if e["resource"]["id"] == "tpi-draft"
    ]
    return tpi


def with_myalgia_reason(request: dict[str, Any]) -> dict[str, Any]:
    """The TPI order carrying the diagnosis an EHR attaches to it: M79.12."""
    tpi_draft(request)["reasonCode"] = [copy.deepcopy(MYALGIA_NECK)]
    return request


def synthea_orders(
    vary: Callable[[dict[str, Any]], dict[str, Any]] = lambda r: r,
) -> list[tuple[str, dict[str, Any]]]:
    return [(name, vary(order_select_for(bundle))) for name, bundle in synthea_bundles()]


@pytest.fixture(scope="module")
def vignettes_burden() -> Burden:
    orders = vignette_orders()
    assert len(orders) >= 40, "expected the vignette library to be present"
    return measure("vignettes with a TPI order", orders)


@pytest.fixture(scope="module")
def synthea_burden() -> Burden:
    return measure("Synthea patients, TPI order", synthea_orders())


@pytest.fixture(scope="module")
def synthea_m7912_burden() -> Burden:
    return measure(
        "Synthea patients, TPI order with reasonCode M79.12", synthea_orders(with_myalgia_reason)
    )


def test_alert_burden_on_the_vignettes(vignettes_burden):
    """Every order-hook vignette with a TPI order: one card per topic at most, a critical
    infection card alone."""
    print(vignettes_burden.report())
    assert_what_a_clinician_would_notice(vignettes_burden)


def test_alert_burden_on_synthea_patients(synthea_burden):
    """Every Synthea patient (SNOMED-coded records, no myofascial diagnosis, no TPI history)
    given a TPI order: answered without a traceback; one card per topic at most."""
    print(synthea_burden.report())
    assert synthea_burden.orders == len(synthea_files())
    assert_what_a_clinician_would_notice(synthea_burden)


def test_alert_burden_on_synthea_patients_with_the_order_diagnosis(synthea_m7912_burden):
    """The same patients, the TPI order carrying M79.12 (myalgia of the neck): the order's
    diagnosis is the indication (section 1, "Order diagnosis"): E1 never fires."""
    print(synthea_m7912_burden.report())
    assert_what_a_clinician_would_notice(synthea_m7912_burden)
    for label, response in synthea_m7912_burden.responses:
        for c in response["cards"]:
            assert "E1" not in rules(c), label


def test_the_order_diagnosis_lowers_the_burden(synthea_burden, synthea_m7912_burden):
    """With the diagnosis on the order, no patient gets more interruptive cards than without
    it (E1, a warning, no longer fires; nothing else changes for the worse)."""
    without = dict(synthea_burden.responses)
    for label, response in synthea_m7912_burden.responses:
        before = sum(c["indicator"] in INTERRUPTIVE for c in without[label]["cards"])
        after = sum(c["indicator"] in INTERRUPTIVE for c in response["cards"])
        assert after <= before, label


# --------------------------------------------------------------------------- not a TPI


def test_no_card_on_a_lipid_panel_instead_of_the_tpi():
    """The vignette where every topic speaks, its TPI draft recoded as a lipid panel: not a
    TPI order, so no card at all."""
    request = load_vignette("never-everything-but-infection-or-allergy")
    assert len(evaluate(request)["cards"]) == 4
    for entry in request["context"]["draftOrders"]["entry"]:
        if entry["resource"]["id"] == "tpi-1":
            entry["resource"]["code"] = copy.deepcopy(LIPID_PANEL)
    assert tpi_order_count(request) == 0
    assert evaluate(request) == {"cards": []}


def test_no_card_on_a_lipid_panel_for_any_synthea_patient():
    """The Synthea patients, a lipid panel ordered instead of the TPI: no card for anyone."""
    for name, request in synthea_orders():
        tpi_draft(request)["code"] = copy.deepcopy(LIPID_PANEL)
        assert evaluate(request) == {"cards": []}, name


# --------------------------------------------------------------------------- PT on Synthea


def exercise_plans(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Active CarePlans with an exercise activity (role `exercise` in physical-therapy)."""
    pt = terminology()["physical-therapy"]
    plans = []
    for entry in bundle["entry"]:
        plan = entry["resource"]
        if plan["resourceType"] != "CarePlan" or plan["status"] != "active":
            continue
        activities = [
            c
            for a in plan.get("activity", [])
            for c in a.get("detail", {}).get("code", {}).get("coding", [])
        ]
        if any("exercise" in pt.roles_of(c.get("system"), c.get("code")) for c in activities):
            plans.append(plan)
    return plans


def category_codes(plan: dict[str, Any]) -> set[str]:
    return {c.get("code") for cc in plan.get("category", []) for c in cc.get("coding", [])}


def test_exercise_in_a_fitness_plan_does_not_suppress_the_pt_card():
    """Synthea patients whose only exercise activity sits in a diabetes, hyperlipidemia or
    heart-failure plan: general fitness, not therapy for the pain (P1 "Active therapy in
    place"): every one of them gets the P1 card."""
    seen = []
    for name, bundle in synthea_bundles():
        plans = exercise_plans(bundle)
        if not plans or not all(category_codes(p) & FITNESS_PLANS for p in plans):
            continue
        seen.append(name)
        cards = evaluate(order_select_for(bundle))["cards"]
        pt = [c for c in cards if c["source"]["topic"]["code"] == "pt-integration"]
        assert len(pt) == 1, f"{name}: a fitness plan suppressed the PT card"
        assert rules(pt[0]) == ["P1"]
    assert len(seen) >= 5, seen


# --------------------------------------------------------------------------- S6 on Synthea


def pregnant_patient() -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The Synthea patient with the most recent coded Normal pregnancy, and that Condition."""
    latest = None
    for name, bundle in synthea_bundles():
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] != "Condition":
                continue
            codes = {c.get("code") for c in resource["code"].get("coding", [])}
            if NORMAL_PREGNANCY in codes and (
                latest is None or resource["onsetDateTime"] > latest[2]["onsetDateTime"]
            ):
                latest = (name, bundle, resource)
    assert latest is not None, "no Synthea patient with a coded Normal pregnancy"
    return latest


def with_triamcinolone_draft(request: dict[str, Any]) -> dict[str, Any]:
    code, display = TRIAMCINOLONE
    assert terminology()["corticosteroids"].contains(RXNORM, code)
    request["context"]["draftOrders"]["entry"].append(
        {
            "resource": {
                "resourceType": "MedicationRequest",
                "id": "triam-draft",
                "status": "draft",
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [{"system": RXNORM, "code": code, "display": display}],
                    "text": "triamcinolone acetonide 40 mg/mL, 1 mL, with the TPI",
                },
                "subject": {"reference": f"Patient/{request['context']['patientId']}"},
            }
        }
    )
    return request


def safety_card(response: dict[str, Any]) -> dict[str, Any] | None:
    found = [c for c in response["cards"] if c["source"]["topic"]["code"] == "tpi-safety"]
    return found[0] if found else None


def test_a_steroid_in_a_synthea_pregnancy_gets_s6():
    """The Synthea patient with the latest coded Normal pregnancy (SNOMED 72892002).

    No fixture has a pregnancy within 280 days of 2026-11-23 (Synthea's records end by 2021),
    and Synthea exports every pregnancy resolved at delivery. So the test shifts that
    patient's dates: her latest pregnancy Condition is moved to an onset 12 weeks before
    2026-11-23 (onset and recordedDate), and shown as the EHR would send it during the
    pregnancy (clinicalStatus active, no abatement yet). With a triamcinolone draft
    MedicationRequest next to the TPI, the safety card carries S6 and suggests removing that
    draft, not the TPI.
    """
    name, bundle, pregnancy = pregnant_patient()
    make_current(pregnancy)
    response = evaluate(with_triamcinolone_draft(order_select_for(bundle)))
    safety = safety_card(response)
    assert safety is not None, name
    assert_well_formed(safety)
    assert "S6" in rules(safety), name
    assert safety["indicator"] == "warning"
    removed = [
        a["resourceId"]
        for s in safety.get("suggestions", [])
        for a in s["actions"]
        if a["type"] == "delete"
    ]
    assert removed == ["MedicationRequest/triam-draft"]


def make_current(pregnancy: dict) -> None:
    """The fixture's last pregnancy moved to 12 weeks before today, still active."""
    onset = (TODAY - timedelta(weeks=12)).isoformat()
    pregnancy["onsetDateTime"] = onset
    pregnancy["recordedDate"] = onset
    pregnancy.pop("abatementDateTime", None)
    pregnancy["clinicalStatus"]["coding"][0]["code"] = "active"


def test_a_steroid_after_a_past_synthea_pregnancy_gets_no_s6():
    """Counterpart: the same patient as recorded (every pregnancy resolved years ago) with the
    same triamcinolone draft: no S6."""
    name, bundle, _ = pregnant_patient()
    response = evaluate(with_triamcinolone_draft(order_select_for(bundle)))
    safety = safety_card(response)
    assert safety is None or "S6" not in rules(safety), name


def test_a_recent_synthea_pregnancy_without_a_steroid_gets_no_s6():
    """Counterpart: the shifted, current pregnancy and a TPI with no steroid: no S6."""
    name, bundle, pregnancy = pregnant_patient()
    make_current(pregnancy)
    safety = safety_card(evaluate(order_select_for(bundle)))
    assert safety is None or "S6" not in rules(safety), name


# --------------------------------------------------------------------------- sessions


def test_an_ordering_session_shows_each_card_once(tmp_path):
    """An EHR calls order-select, then order-sign for the same TPI order. Without card
    memory every card was read twice; with it the sign call carries only safety cards.
    Run with -s for the figures: cards and interruptive cards per ordering session."""
    from test_memory import as_sign

    from cds_service.auth import AuthSettings
    from conftest import service_client

    client = service_client(tmp_path, auth=AuthSettings(enabled=False))
    sessions = 0
    shown = {"without memory": Counter(), "with memory": Counter()}
    for name, request in vignette_orders():
        if request["hook"] != "order-select":
            continue
        selected = client.post("/cds-services/tpi-order-select", json=request).get_json()
        signed = client.post("/cds-services/tpi-order-sign", json=as_sign(request)).get_json()
        engine_sign = evaluate(as_sign(request))
        assert [c["source"]["topic"]["code"] for c in signed["cards"]] == [
            c["source"]["topic"]["code"]
            for c in engine_sign["cards"]
            if c["source"]["topic"]["code"] == "tpi-safety"
        ], name
        sessions += 1
        for label, calls in (
            ("without memory", (selected["cards"], engine_sign["cards"])),
            ("with memory", (selected["cards"], signed["cards"])),
        ):
            for cards in calls:
                shown[label]["cards"] += len(cards)
                shown[label]["interruptive"] += sum(c["indicator"] in INTERRUPTIVE for c in cards)
    assert sessions >= 50
    for label, counts in shown.items():
        print(
            f"ordering sessions (order-select + order-sign), {label}: {sessions} sessions, "
            f"{counts['cards'] / sessions:.2f} cards and "
            f"{counts['interruptive'] / sessions:.2f} interruptive cards per session"
        )
    assert shown["with memory"]["cards"] < 0.7 * shown["without memory"]["cards"]
