"""Clinical vignettes for the specialist-referral topic (rules R1-R5, suppression, patient-view).

Rules page v2, section 3 "Topic specialist-referral": R1 (two clinical non-responders, warning),
R2 (sessions at the profile cap: info, warning with R1), R3 (fibromyalgia, or sessions in 4 of
the 5 ACR regions), R4 (R1/R2 with a current headache and a head/neck/shoulder session), R5
(radiculopathy: PM&R). One card, one suggestion per candidate specialty; isRecommended goes to
neurology, then rheumatology, then pain medicine, then PM&R; the summary names the finding that
makes the recommended specialty. No suggestion to a specialty already referred to, nor to the
user's own; with every candidate suppressed a warning still shows, info alone gives no card.

Each vignette in tests/vignettes/referral-*.json is one whole CDS Hooks request; small variations
(one status, one date, one code) are made here in Python.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import (
    VIGNETTES,
    add_resource,
    assert_well_formed,
    card,
    evaluate_vignette,
    load_vignette,
    rules,
    topic_card,
)
from conftest import resource as find

TOPIC = "specialist-referral"
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
NUCC = "http://nucc.org/provider-taxonomy"
PAIN = "306265007"
PMR = "306289000"
RHEUM = "306290009"
NEURO = "308474002"
NECK = [{"coding": [{"system": SNOMED, "code": "45048000", "display": "Neck structure"}]}]


# --------------------------------------------------------------------------- helpers


def referral(request: dict[str, Any], **kwargs: Any) -> dict[str, Any] | None:
    return topic_card(request, TOPIC, **kwargs)


def offered(c: dict[str, Any]) -> dict[str, bool]:
    """SNOMED code of each suggested referral -> isRecommended."""
    out: dict[str, bool] = {}
    for s in c.get("suggestions", []):
        for action in s["actions"]:
            if action["type"] != "create":
                continue
            for coding in action["resource"]["code"]["coding"]:
                if coding["system"] == SNOMED:
                    out[coding["code"]] = bool(s.get("isRecommended", False))
    return out


def recommended(c: dict[str, Any]) -> list[str]:
    return [code for code, rec in offered(c).items() if rec]


def assert_referral_suggestions_well_formed(c: dict[str, Any], patient_id: str) -> None:
    assert c["selectionBehavior"] == "at-most-one"
    for s in c["suggestions"]:
        assert s["uuid"] and s["label"]
        (action,) = s["actions"]
        assert action["type"] == "create"
        sr = action["resource"]
        assert sr["resourceType"] == "ServiceRequest"
        assert sr["status"] == "draft"
        assert sr["intent"] == "order"
        assert sr["subject"]["reference"] == f"Patient/{patient_id}"


def resolve(condition: dict[str, Any], on: str = "2026-10-01") -> None:
    condition["clinicalStatus"]["coding"][0]["code"] = "resolved"
    condition["clinicalStatus"]["coding"][0]["display"] = "resolved"
    condition["abatementDateTime"] = on


def condition(
    cid: str, system: str, code: str, display: str, onset: str | None = None
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
    }
    if onset:
        c["onsetDateTime"] = onset
    return c


def as_user(request: dict[str, Any], code: str, display: str, system: str = NUCC) -> None:
    """The ordering user is a PractitionerRole with this specialty (prefetch practitionerRole)."""
    request["context"]["userId"] = "PractitionerRole/role-user"
    request["prefetch"]["practitionerRole"] = {
        "resourceType": "PractitionerRole",
        "id": "role-user",
        "active": True,
        "practitioner": {"reference": "Practitioner/dr-user"},
        "specialty": [
            {"coding": [{"system": system, "code": code, "display": display}], "text": display}
        ],
    }


def as_pain_physician(request: dict[str, Any]) -> None:
    as_user(request, "208VP0000X", "Pain Medicine")


def as_pmr_pain_physician(request: dict[str, Any]) -> None:
    as_user(request, "2081P2900X", "Physical Medicine & Rehabilitation, Pain Medicine")


def existing_referral(
    request: dict[str, Any], rid: str, code: str, display: str, status: str, authored: str
) -> dict[str, Any]:
    sr = {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{request['context']['patientId']}"},
        "authoredOn": authored,
    }
    add_resource(request, "serviceRequests", sr)
    return sr


def at_neck(request: dict[str, Any], *procedure_ids: str) -> None:
    for pid in procedure_ids:
        find(request, "procedures", pid)["bodySite"] = NECK


def set_score(request: dict[str, Any], observation_id: str, value: float) -> None:
    find(request, "observations", observation_id)["valueQuantity"]["value"] = value


RADICULOPATHY = condition(
    "cond-radic-m5412", ICD, "M54.12", "Radiculopathy, cervical region", "2026-06-01"
)


# ---------------------------------------------------------------- R1


def test_r1_two_non_responding_sessions_refer_to_pain_medicine_first():
    """Two TPIs in the year, each under 30 % relief and under 2 points: refer, pain medicine
    recommended, PM&R offered; the detail shows each session's date, baseline and relief."""
    c = referral(load_vignette("referral-r1-two-failed-neck-tpis"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1"]
    assert offered(c) == {PAIN: True, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-r1")
    for evidence in ("2026-05-11", "2026-08-17", "baseline 8", "day 49: 7 (12 %)", "14 %"):
        assert evidence in c["detail"]
    assert "under 30 % relief" in c["summary"]
    assert c["summary"].endswith("refer to pain medicine")


def test_r1_not_when_one_of_the_two_sessions_helped():
    """One non-responder (8 -> 7) and one responder (7 -> 3, 57 %) is not 'failed a few
    injections': no referral card."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    set_score(request, "pain-2026-10-05", 3)
    assert referral(request) is None


def test_r1_not_when_pain_came_back_after_a_good_response():
    """The second TPI helped at day 14 (7 -> 3) and the pain returned by day 49 (6): that is
    recurrence, not non-response; only one non-responder, no card."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    early = dict(find(request, "observations", "pain-2026-10-05"))
    early.update(id="pain-2026-08-31", effectiveDateTime="2026-08-31T09:30:00-05:00")
    early["valueQuantity"] = dict(early["valueQuantity"], value=3)
    add_resource(request, "observations", early)
    assert referral(request) is None


@pytest.mark.parametrize(
    ("when", "fires"),
    [
        ("2026-10-12T09:30:00-05:00", True),  # day 56: can show non-response
        ("2026-10-13T09:30:00-05:00", False),  # day 57: only late pain, response unknown
    ],
)
def test_r1_a_non_responder_needs_a_follow_up_score_by_day_56(when, fires):
    """The second session's only follow-up score (6, 14 %) moved to day 56 or day 57: a session
    with only late scores is unknown, never counted as non-response."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    find(request, "observations", "pain-2026-10-05")["effectiveDateTime"] = when
    c = referral(request)
    assert (c is not None) is fires
    if fires:
        assert rules(c) == ["R1"]


def test_r1_two_point_drop_is_a_response():
    """8 -> 6 at day 49 is only 25 % relief but a 2-point drop (the MCID): a responder, so only
    one non-responder is left."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    set_score(request, "pain-2026-06-29", 6)
    assert referral(request) is None


# ---------------------------------------------------------------- R2


def test_r2_three_sessions_with_good_relief_are_info():
    """Three TPIs in 12 months (the Medicare cap), each with good relief: recurrent pain, a
    specialist reassessment — info, since nothing failed; pain medicine recommended, PM&R
    offered; the detail names the three sessions."""
    c = referral(load_vignette("referral-r2-three-sessions-good-relief"))
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["R2"]
    assert offered(c) == {PAIN: True, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-r2")
    for session in ("2026-01-12", "2026-05-04", "2026-09-28"):
        assert session in c["detail"]
    assert c["summary"] == "Recurrent pain after 3 injections in 12 months: refer to pain medicine"


def test_r2_not_under_the_commercial_cap_of_four():
    """The same three good sessions stay under the commercial cap (4): no referral card."""
    response = evaluate_vignette("referral-r2-three-sessions-good-relief", profile="commercial")
    assert card(response, TOPIC) is None


@pytest.mark.parametrize(
    ("performed", "fires"),
    [
        ("2025-11-23T10:00:00-05:00", True),  # today - 365
        ("2025-11-22T10:00:00-05:00", False),  # today - 366
    ],
)
def test_r2_counts_sessions_of_the_last_365_days(performed, fires):
    """The oldest TPI moved to today - 365 (still in the year) or today - 366 (out)."""
    request = load_vignette("referral-r2-three-sessions-good-relief")
    find(request, "procedures", "tpi-2026-01-12")["performedDateTime"] = performed
    c = referral(request)
    assert (c is not None) is fires
    if fires:
        assert c["indicator"] == "info"
        assert rules(c) == ["R2"]


@pytest.mark.parametrize("status", ["entered-in-error", "not-done"])
def test_r2_procedure_entered_in_error_or_not_done_is_no_session(status):
    """One of the three Procedures entered-in-error (or not done) leaves two sessions: no R2."""
    request = load_vignette("referral-r2-three-sessions-good-relief")
    find(request, "procedures", "tpi-2026-05-04")["status"] = status
    assert referral(request) is None


def test_r2_with_r1_is_a_warning():
    """Two failed TPIs and an earlier one in January (three in the year): R1 and R2, a warning
    card whose summary names the failed injections."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    january = dict(find(request, "procedures", "tpi-2026-05-11"))
    january.update(id="tpi-2026-01-19", performedDateTime="2026-01-19T10:00:00-05:00")
    add_resource(request, "procedures", january)
    c = referral(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1", "R2"]
    assert offered(c) == {PAIN: True, PMR: False}
    assert "under 30 % relief" in c["summary"]


# ---------------------------------------------------------------- R3: fibromyalgia


def test_r3_fibromyalgia_with_tpi_order_suggests_rheumatology_only():
    """Active fibromyalgia and a TPI order: widespread pain, info, one suggestion —
    rheumatology, recommended (pain medicine and PM&R are R1/R2 candidates only)."""
    c = referral(load_vignette("referral-r3-fibromyalgia-tpi-order"))
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["R3"]
    assert offered(c) == {RHEUM: True}
    assert_referral_suggestions_well_formed(c, "ref-fibro")
    assert "fibromyalgia" in c["summary"].lower()
    assert c["summary"].endswith("refer to rheumatology")


def test_r3_fibromyalgia_coded_in_snomed_counts():
    """Fibromyalgia on the problem list as SNOMED 203082005 counts like M79.7."""
    request = load_vignette("referral-r3-fibromyalgia-tpi-order")
    find(request, "conditions", "cond-ref-fibro-m797")["code"] = {
        "coding": [{"system": SNOMED, "code": "203082005", "display": "Fibromyalgia (disorder)"}],
        "text": "Fibromyalgia",
    }
    c = referral(request)
    assert c is not None
    assert rules(c) == ["R3"]
    assert recommended(c) == [RHEUM]


def test_r3_resolved_fibromyalgia_gives_no_referral():
    """A resolved fibromyalgia entry is not active: no widespread-pain finding, no card."""
    request = load_vignette("referral-r3-fibromyalgia-tpi-order")
    resolve(find(request, "conditions", "cond-ref-fibro-m797"))
    assert referral(request) is None


def test_r3_refuted_fibromyalgia_gives_no_referral():
    """A fibromyalgia entry marked refuted is not active."""
    request = load_vignette("referral-r3-fibromyalgia-tpi-order")
    status = find(request, "conditions", "cond-ref-fibro-m797")["verificationStatus"]
    status["coding"][0].update(code="refuted", display="refuted")
    assert referral(request) is None


# ---------------------------------------------------------------- R3: 4 of 5 ACR regions


def test_r3_sessions_in_four_acr_regions_suggest_rheumatology():
    """TPIs at the neck and both upper trapezius muscles (one day in March) and the left gluteus
    medius (August): axial, left upper, right upper, left lower — 4 of 5 ACR regions, widespread
    pain (info), rheumatology recommended; the detail names the regions."""
    c = referral(load_vignette("referral-r3-four-acr-regions"))
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["R3"]
    assert offered(c) == {RHEUM: True}
    assert_referral_suggestions_well_formed(c, "ref-acr4")
    assert "4 of 5" in c["detail"]
    for region in ("axial", "left upper", "right upper", "left lower"):
        assert region in c["detail"]
    assert c["summary"] == (
        "Injections in 4 body regions in 12 months (widespread pain): refer to rheumatology"
    )


def test_r3_both_shoulders_and_neck_are_not_widespread():
    """Neck plus left and right upper trapezius over two sessions: axial, left upper and right
    upper — 3 of 5 ACR regions, not widespread pain; no referral card (version 1 sent this
    patient to rheumatology)."""
    assert referral(load_vignette("referral-r3-both-shoulders-and-neck")) is None


def test_r3_three_regions_once_the_buttock_session_is_gone():
    """Without the gluteal session: neck and both shoulders only, 3 regions, no card."""
    request = load_vignette("referral-r3-four-acr-regions")
    entries = request["prefetch"]["procedures"]["entry"]
    entries[:] = [e for e in entries if e["resource"]["id"] != "tpi-2026-08-24"]
    assert referral(request) is None


def test_r3_unsided_buttock_counts_as_the_lower_region():
    """The gluteal site recorded without a side (Buttock structure): no lower region is counted
    yet, so it counts as one lower region; 4 regions, R3 fires."""
    request = load_vignette("referral-r3-four-acr-regions")
    find(request, "procedures", "tpi-2026-08-24")["bodySite"] = [
        {"coding": [{"system": SNOMED, "code": "46862004", "display": "Buttock structure"}]}
    ]
    c = referral(request)
    assert c is not None
    assert rules(c) == ["R3"]


def test_r3_unsided_shoulder_does_not_count_beside_a_sided_one():
    """Shoulders recorded as 'Shoulder region structure' (no side) and the right shoulder: the
    unsided site may be the right one, so the upper level counts once (right upper); with the
    neck and the left buttock that is 3 regions, no card."""
    request = load_vignette("referral-r3-four-acr-regions")
    find(request, "procedures", "tpi-2026-03-16-shoulders")["bodySite"] = [
        {
            "coding": [
                {"system": SNOMED, "code": "16982005", "display": "Shoulder region structure"}
            ]
        },
        {
            "coding": [
                {
                    "system": SNOMED,
                    "code": "91774008",
                    "display": "Structure of right shoulder region",
                }
            ]
        },
    ]
    assert referral(request) is None


def test_r3_head_sites_count_toward_no_acr_region():
    """The fourth session at the temporalis (head) instead of the buttock: ACR 2016 counts head
    pain toward no region; 3 regions, no card."""
    request = load_vignette("referral-r3-four-acr-regions")
    find(request, "procedures", "tpi-2026-08-24")["bodySite"] = [
        {
            "coding": [
                {"system": SNOMED, "code": "52927003", "display": "Structure of temporalis muscle"}
            ]
        }
    ]
    assert referral(request) is None


def test_r3_session_without_body_site_does_not_count():
    """The gluteal session recorded without a bodySite has no region: 3 regions, no card."""
    request = load_vignette("referral-r3-four-acr-regions")
    del find(request, "procedures", "tpi-2026-08-24")["bodySite"]
    assert referral(request) is None


def test_r3_the_ordered_tpi_is_not_a_session():
    """Sessions at the neck and both shoulders, and today's order at the left buttock: the
    order is not a session yet, 3 regions, no card."""
    request = load_vignette("referral-r3-four-acr-regions")
    entries = request["prefetch"]["procedures"]["entry"]
    entries[:] = [e for e in entries if e["resource"]["id"] != "tpi-2026-08-24"]
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    order["bodySite"] = [
        {
            "coding": [
                {"system": SNOMED, "code": "723979003", "display": "Structure of left buttock"}
            ]
        }
    ]
    assert referral(request) is None


@pytest.mark.parametrize(
    ("performed", "fires"),
    [
        ("2025-11-23T10:00:00-05:00", True),  # today - 365
        ("2025-11-22T10:00:00-05:00", False),  # today - 366
    ],
)
def test_r3_regions_count_from_sessions_of_the_last_365_days(performed, fires):
    """The gluteal session moved to today - 365 (counts) or today - 366 (does not)."""
    request = load_vignette("referral-r3-four-acr-regions")
    find(request, "procedures", "tpi-2026-08-24")["performedDateTime"] = performed
    c = referral(request)
    assert (c is not None) is fires


def test_r3_with_r1_is_a_warning_and_the_summary_names_widespread_pain():
    """The same widespread sessions, both failed (8 -> 7, 7 -> 6): R1 and R3, a warning;
    rheumatology is the most specific candidate, recommended, and the summary names the
    widespread pain that makes it, not the failed injections."""
    request = load_vignette("referral-r3-four-acr-regions")
    set_score(request, "pain-2026-04-27", 7)
    set_score(request, "pain-2026-10-05", 6)
    c = referral(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1", "R3"]
    assert offered(c) == {RHEUM: True, PAIN: False, PMR: False}
    assert "widespread pain" in c["summary"]
    assert "under 30 %" not in c["summary"]
    assert c["summary"].endswith("refer to rheumatology")


# ---------------------------------------------------------------- R4


def test_r4_tension_headache_with_failed_neck_tpis_recommends_neurology():
    """R1 at the neck with an active tension-type headache (G44.209): neurology recommended,
    pain medicine and PM&R offered; the summary names the headache."""
    c = referral(load_vignette("referral-r4-tension-headache-failed-tpis"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1", "R4"]
    assert offered(c) == {NEURO: True, PAIN: False, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-r4")
    assert "headache" in c["summary"].lower()
    assert c["summary"].endswith("refer to neurology")


@pytest.mark.parametrize(
    ("code", "display", "fires"),
    [
        ("91775009", "Structure of left shoulder region", True),  # shoulder girdle
        ("31764008", "Structure of trapezius muscle", True),  # shoulder girdle
        ("79368004", "Masseter muscle structure", True),  # jaw
        ("52927003", "Structure of temporalis muscle", True),  # head
        ("52612000", "Structure of lumbar region of back", False),  # lower back
        ("424072006", "Structure of thoracic paraspinous muscle group", False),  # upper back
    ],
)
def test_r4_needs_a_head_jaw_neck_or_shoulder_site(code, display, fires):
    """The two failed sessions of the tension-type headache patient moved to another site:
    head, jaw, neck and shoulder-girdle trigger points refer pain to the head; back ones do
    not."""
    request = load_vignette("referral-r4-tension-headache-failed-tpis")
    for pid in ("tpi-2026-05-11", "tpi-2026-08-17"):
        find(request, "procedures", pid)["bodySite"] = [
            {"coding": [{"system": SNOMED, "code": code, "display": display}]}
        ]
    c = referral(request)
    assert c is not None
    assert (rules(c) == ["R1", "R4"]) is fires
    assert (NEURO in offered(c)) is fires


def test_r4_old_tension_headache_still_counts():
    """Tension-type headache counts at any date: onset 2009, still active."""
    request = load_vignette("referral-r4-tension-headache-failed-tpis")
    find(request, "conditions", "cond-ref-r4-g44209")["onsetDateTime"] = "2009-03-01"
    c = referral(request)
    assert c is not None
    assert rules(c) == ["R1", "R4"]


def test_r4_migraine_with_failed_neck_tpis_recommends_neurology():
    """A recent migraine (G43.909, onset 2025-11-04) is a headache phenotype too."""
    request = load_vignette("referral-r4-tension-headache-failed-tpis")
    find(request, "conditions", "cond-ref-r4-g44209")["code"] = {
        "coding": [
            {
                "system": ICD,
                "code": "G43.909",
                "display": "Migraine, unspecified, not intractable, without status migrainosus",
            }
        ],
        "text": "Migraine",
    }
    c = referral(request)
    assert c is not None
    assert rules(c) == ["R1", "R4"]
    assert recommended(c) == [NEURO]


def test_r4_not_for_a_2009_migraine_and_lumbar_tpis():
    """Migraine on the problem list since 2009 and two failed lumbar TPIs: R1 only — pain
    medicine recommended, PM&R offered, no neurology (version 1 sent this patient to
    neurology)."""
    c = referral(load_vignette("referral-r4-old-migraine-lumbar-tpis"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1"]
    assert offered(c) == {PAIN: True, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-migraine")


def test_r4_not_for_a_recent_migraine_when_the_failed_tpis_were_lumbar():
    """Migraine onset 2025-06-02 (recent), but the failed sessions were lumbar: no neurology."""
    request = load_vignette("referral-r4-old-migraine-lumbar-tpis")
    find(request, "conditions", "cond-ref-migraine-g43909")["onsetDateTime"] = "2025-06-02"
    c = referral(request)
    assert c is not None
    assert rules(c) == ["R1"]
    assert NEURO not in offered(c)


def test_r4_not_for_a_2009_migraine_even_with_neck_tpis():
    """The failed sessions at the neck, but the migraine dates from 2009: no neurology."""
    request = load_vignette("referral-r4-old-migraine-lumbar-tpis")
    at_neck(request, "tpi-2026-04-13", "tpi-2026-07-20")
    c = referral(request)
    assert c is not None
    assert rules(c) == ["R1"]
    assert NEURO not in offered(c)


@pytest.mark.parametrize(
    ("onset", "fires"),
    [("2024-11-23", True), ("2024-11-22", False)],  # today - 730, today - 731
)
def test_r4_migraine_counts_within_730_days(onset, fires):
    """Failed neck sessions and a migraine whose onset is today - 730 (counts) or today - 731
    (does not)."""
    request = load_vignette("referral-r4-old-migraine-lumbar-tpis")
    at_neck(request, "tpi-2026-04-13", "tpi-2026-07-20")
    find(request, "conditions", "cond-ref-migraine-g43909")["onsetDateTime"] = onset
    c = referral(request)
    assert c is not None
    assert (rules(c) == ["R1", "R4"]) is fires
    assert (recommended(c) == [NEURO]) is fires


def test_r4_migraine_without_onset_is_dated_by_recorded_date():
    """No onset, recordedDate 2026-01-10: a recent migraine; with neck sessions, R4."""
    request = load_vignette("referral-r4-old-migraine-lumbar-tpis")
    at_neck(request, "tpi-2026-04-13", "tpi-2026-07-20")
    migraine = find(request, "conditions", "cond-ref-migraine-g43909")
    del migraine["onsetDateTime"]
    migraine["recordedDate"] = "2026-01-10"
    c = referral(request)
    assert c is not None
    assert rules(c) == ["R1", "R4"]


def test_r4_migraine_without_any_date_does_not_count():
    """No onset and no recordedDate: the migraine cannot be shown to be current; no R4."""
    request = load_vignette("referral-r4-old-migraine-lumbar-tpis")
    at_neck(request, "tpi-2026-04-13", "tpi-2026-07-20")
    del find(request, "conditions", "cond-ref-migraine-g43909")["onsetDateTime"]
    c = referral(request)
    assert c is not None
    assert rules(c) == ["R1"]


def test_r4_rests_on_the_failed_sessions_not_on_a_helpful_neck_injection():
    """Recent migraine; two failed lumbar TPIs and a neck TPI in September that helped
    (7 -> 2). R1 (and R2: three sessions) fire; R4 rests on R1's non-responding sessions, which
    are lumbar: no neurology."""
    request = load_vignette("referral-r4-old-migraine-lumbar-tpis")
    find(request, "conditions", "cond-ref-migraine-g43909")["onsetDateTime"] = "2025-06-02"
    september = dict(find(request, "procedures", "tpi-2026-07-20"))
    september.update(id="tpi-2026-09-21", performedDateTime="2026-09-21T10:00:00-05:00")
    september["bodySite"] = NECK
    add_resource(request, "procedures", september)
    for oid, when, value in (
        ("pain-2026-09-21", "2026-09-21T09:15:00-05:00", 7),
        ("pain-2026-10-19", "2026-10-19T09:30:00-05:00", 2),
    ):
        score = dict(find(request, "observations", "pain-2026-08-31"))
        score.update(id=oid, effectiveDateTime=when)
        score["valueQuantity"] = dict(score["valueQuantity"], value=value)
        add_resource(request, "observations", score)
    c = referral(request)
    assert c is not None
    assert rules(c) == ["R1", "R2"]
    assert NEURO not in offered(c)


def test_r4_with_r2_alone_rests_on_the_counted_sessions():
    """Three good neck TPIs this year (R2, info) and a migraine since 2025-09 (SNOMED
    37796009): R4 with R2 is info, neurology recommended, and the summary names the headache."""
    request = load_vignette("referral-r2-three-sessions-good-relief")
    add_resource(
        request,
        "conditions",
        condition("cond-ref-r2-migraine", SNOMED, "37796009", "Migraine", "2025-09-01"),
    )
    c = referral(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["R2", "R4"]
    assert offered(c) == {NEURO: True, PAIN: False, PMR: False}
    assert "migraine" in c["summary"].lower()
    assert c["summary"].endswith("refer to neurology")


def test_r4_resolved_headache_leaves_pain_medicine_recommended():
    """Headache resolved: plain R1, no neurology suggestion."""
    request = load_vignette("referral-r4-tension-headache-failed-tpis")
    resolve(find(request, "conditions", "cond-ref-r4-g44209"))
    c = referral(request)
    assert c is not None
    assert rules(c) == ["R1"]
    assert offered(c) == {PAIN: True, PMR: False}


def test_r4_headache_without_r1_or_r2_gives_no_referral():
    """Headache alone (second TPI helped, 7 -> 3): no R1/R2, so no neurology referral either."""
    request = load_vignette("referral-r4-tension-headache-failed-tpis")
    set_score(request, "pain-2026-10-05", 3)
    assert referral(request) is None


def test_r4_summary_with_a_long_migraine_name_still_names_neurology():
    """Chronic migraine coded G43.709 ('Chronic migraine without aura, not intractable, without
    status migrainosus', a common problem-list code): the summary stays under 140 characters and
    still names the headache and the specialty it makes ('refer to neurology')."""
    request = load_vignette("referral-r4-tension-headache-failed-tpis")
    display = "Chronic migraine without aura, not intractable, without status migrainosus"
    find(request, "conditions", "cond-ref-r4-g44209")["code"] = {
        "coding": [{"system": ICD, "code": "G43.709", "display": display}],
        "text": display,
    }
    c = referral(request)
    assert c is not None
    assert recommended(c) == [NEURO]
    assert "migraine" in c["summary"].lower()
    assert c["summary"].endswith("refer to neurology")


# ---------------------------------------------------------------- R5


def test_r5_radiculopathy_suggests_pmr_only():
    """Lumbar radiculopathy (M54.16) with a lumbar TPI order: pain possibly not myofascial (info),
    one suggestion, PM&R, recommended; the summary names the radiculopathy."""
    c = referral(load_vignette("referral-r5-lumbar-radiculopathy"))
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["R5"]
    assert offered(c) == {PMR: True}
    assert_referral_suggestions_well_formed(c, "ref-radic")
    assert "radiculopathy" in c["summary"].lower()
    assert c["summary"].endswith("refer to PM&R (physiatry)")


def test_r5_sciatica_counts_like_radiculopathy():
    """Lumbago with sciatica (M54.41) fires the same PM&R evaluation."""
    request = load_vignette("referral-r5-lumbar-radiculopathy")
    find(request, "conditions", "cond-ref-radic-m5416")["code"] = {
        "coding": [
            {"system": ICD, "code": "M54.41", "display": "Lumbago with sciatica, right side"}
        ],
        "text": "Lumbago with sciatica, right side",
    }
    c = referral(request)
    assert c is not None
    assert offered(c) == {PMR: True}


def test_r5_radiculopathy_coded_in_snomed_counts():
    """Lumbar radiculopathy as SNOMED 128196005 on the problem list."""
    request = load_vignette("referral-r5-lumbar-radiculopathy")
    find(request, "conditions", "cond-ref-radic-m5416")["code"] = {
        "coding": [{"system": SNOMED, "code": "128196005", "display": "Lumbar radiculopathy"}],
        "text": "Lumbar radiculopathy",
    }
    c = referral(request)
    assert c is not None
    assert rules(c) == ["R5"]


def test_r5_resolved_radiculopathy_gives_no_referral():
    request = load_vignette("referral-r5-lumbar-radiculopathy")
    resolve(find(request, "conditions", "cond-ref-radic-m5416"))
    assert referral(request) is None


def test_r5_gives_no_card_when_the_user_is_a_pain_physician():
    """The pain physician ordering the lumbar TPI evaluates radicular pain: PM&R is not
    suggested for R5, and R5 alone (info) then gives no card."""
    request = load_vignette("referral-r5-lumbar-radiculopathy")
    as_pain_physician(request)
    assert referral(request) is None


def test_r5_with_r1_offers_pain_medicine_and_pmr():
    """Radiculopathy on top of two failed TPIs is no longer 'R5 alone': pain medicine and PM&R
    both offered, pain medicine recommended, warning."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    add_resource(request, "conditions", RADICULOPATHY)
    c = referral(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1", "R5"]
    assert offered(c) == {PAIN: True, PMR: False}
    assert "under 30 % relief" in c["summary"]


def test_r5_with_r1_for_a_pain_physician_keeps_pmr_for_the_failed_injections():
    """The pain physician's patient has radiculopathy and two failed TPIs: pain medicine is the
    user's own specialty, PM&R for R5 is suppressed, but PM&R offered for R1 stays."""
    request = load_vignette("referral-suppress-pain-physician-orders")
    add_resource(request, "conditions", RADICULOPATHY)
    c = referral(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert "R1" in rules(c)
    assert offered(c) == {PMR: True}


# ---------------------------------------------------------------- the user's own specialty


def test_pain_physician_is_not_told_to_refer_to_pain_medicine():
    """The ordering user is a pain physician (NUCC 208VP0000X): no pain medicine suggestion,
    PM&R becomes the recommended one; the summary names the failed injections."""
    c = referral(load_vignette("referral-suppress-pain-physician-orders"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1"]
    assert offered(c) == {PMR: True}
    assert_referral_suggestions_well_formed(c, "ref-painmd")
    assert "under 30 % relief" in c["summary"]
    assert c["summary"].endswith("refer to PM&R (physiatry)")


@pytest.mark.parametrize(
    "name",
    [
        "referral-r1-two-failed-neck-tpis",
        "referral-r2-three-sessions-good-relief",
        "referral-r3-fibromyalgia-tpi-order",
        "referral-r3-four-acr-regions",
        "referral-r4-tension-headache-failed-tpis",
        "referral-r4-old-migraine-lumbar-tpis",
        "referral-r5-lumbar-radiculopathy",
        "referral-suppress-rheumatology-completed-years-ago",
    ],
)
def test_a_pain_physician_is_never_told_to_refer_to_pain_medicine(name):
    """Whatever the findings, a pain physician's card never suggests pain medicine."""
    request = load_vignette(name)
    as_pain_physician(request)
    c = referral(request)
    if c is not None:
        assert PAIN not in offered(c)
        assert "refer to pain medicine" not in c["summary"]


def test_r2_alone_for_a_pain_physician_offers_pmr():
    """Three good TPIs (R2, info) ordered by a pain physician: PM&R is still offered."""
    request = load_vignette("referral-r2-three-sessions-good-relief")
    as_pain_physician(request)
    c = referral(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert offered(c) == {PMR: True}


def test_pain_specialty_in_snomed_suppresses_pain_medicine():
    """Specialty coded SNOMED 394882004 'Pain management' is the same specialty."""
    request = load_vignette("referral-suppress-pain-physician-orders")
    as_user(request, "394882004", "Pain management", SNOMED)
    c = referral(request)
    assert c is not None
    assert offered(c) == {PMR: True}


def test_family_physician_gets_the_pain_medicine_suggestion():
    """A family physician's own specialty suppresses nothing."""
    request = load_vignette("referral-suppress-pain-physician-orders")
    as_user(request, "207Q00000X", "Family Medicine")
    c = referral(request)
    assert c is not None
    assert offered(c) == {PAIN: True, PMR: False}


def test_neurologist_ordering_is_not_told_to_refer_to_neurology():
    """R4 patient, but the ordering user is a neurologist (NUCC 2084N0400X): neurology is not
    offered; pain medicine is recommended."""
    request = load_vignette("referral-r4-tension-headache-failed-tpis")
    as_user(request, "2084N0400X", "Psychiatry & Neurology, Neurology")
    c = referral(request)
    assert c is not None
    assert offered(c) == {PAIN: True, PMR: False}
    assert NEURO not in offered(c)


# ---------------------------------------------------------------- every candidate suppressed


def test_pmr_pain_physician_suppresses_every_candidate_but_the_warning_explains():
    """A PM&R pain physician (2081P2900X) counts as pain and PM&R: every R1 candidate
    suppressed, the warning card still explains the finding, without suggestions or
    selectionBehavior."""
    request = load_vignette("referral-suppress-pain-physician-orders")
    as_pmr_pain_physician(request)
    c = referral(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1"]
    assert "suggestions" not in c
    assert "selectionBehavior" not in c
    assert "2026-05-11" in c["detail"] and "2026-08-17" in c["detail"]


def test_info_finding_with_every_candidate_suppressed_gives_no_card():
    """Three good TPIs (R2, info) ordered by a PM&R pain physician: no specialty left to offer
    and nothing failed — no action, no card."""
    request = load_vignette("referral-r2-three-sessions-good-relief")
    as_pmr_pain_physician(request)
    assert referral(request) is None


def test_r1_and_r3_with_every_candidate_suppressed_still_warn():
    """Widespread sessions that failed, a rheumatology referral already active and a PM&R pain
    physician ordering: every candidate suppressed; R1 and R3 are warnings, so the card still
    shows both findings without suggestions."""
    request = load_vignette("referral-r3-four-acr-regions")
    set_score(request, "pain-2026-04-27", 7)
    set_score(request, "pain-2026-10-05", 6)
    existing_referral(
        request, "sr-rheum", RHEUM, "Referral to rheumatologist (procedure)", "active", "2026-10-01"
    )
    as_pmr_pain_physician(request)
    c = referral(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1", "R3"]
    assert "suggestions" not in c


# ---------------------------------------------------------------- referrals already in place


def test_existing_active_pain_referral_suppresses_pain_suggestion():
    """An active pain-clinic referral (306265007) already exists: suggest PM&R only."""
    c = referral(load_vignette("referral-suppress-existing-pain-referral"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert offered(c) == {PMR: True}


@pytest.mark.parametrize("status", ["revoked", "entered-in-error"])
def test_revoked_or_erroneous_pain_referral_does_not_suppress(status):
    """A revoked (or entered-in-error) pain referral is no referral: pain medicine is offered
    and recommended again."""
    request = load_vignette("referral-suppress-existing-pain-referral")
    find(request, "serviceRequests", "sr-pain-2026-10")["status"] = status
    c = referral(request)
    assert c is not None
    assert offered(c) == {PAIN: True, PMR: False}


def test_pain_referral_on_hold_since_2024_suppresses():
    """An on-hold pain referral of any date (authored 2024-03-01) is still open: PM&R only."""
    request = load_vignette("referral-suppress-existing-pain-referral")
    sr = find(request, "serviceRequests", "sr-pain-2026-10")
    sr["status"] = "on-hold"
    sr["authoredOn"] = "2024-03-01"
    c = referral(request)
    assert c is not None
    assert offered(c) == {PMR: True}


def test_pain_referral_completed_this_year_suppresses():
    """A pain referral completed, authored 2026-06-01 (in the last 365 days): still suppressed."""
    request = load_vignette("referral-suppress-existing-pain-referral")
    sr = find(request, "serviceRequests", "sr-pain-2026-10")
    sr["status"] = "completed"
    sr["authoredOn"] = "2026-06-01"
    c = referral(request)
    assert c is not None
    assert offered(c) == {PMR: True}


def test_pain_referral_completed_over_a_year_ago_does_not_suppress():
    """A pain referral completed, authored 2025-10-01 (418 days ago): offer pain medicine again."""
    request = load_vignette("referral-suppress-existing-pain-referral")
    sr = find(request, "serviceRequests", "sr-pain-2026-10")
    sr["status"] = "completed"
    sr["authoredOn"] = "2025-10-01"
    c = referral(request)
    assert c is not None
    assert offered(c) == {PAIN: True, PMR: False}


def test_pain_referral_performed_this_year_suppresses_even_if_authored_earlier():
    """A pain referral authored 2025-10-01 (418 days ago) but carried out 2026-01-15
    (occurrence, 312 days ago): 'authoredOn or occurrence in the last 365 days' — suppressed."""
    request = load_vignette("referral-suppress-existing-pain-referral")
    sr = find(request, "serviceRequests", "sr-pain-2026-10")
    sr["status"] = "completed"
    sr["authoredOn"] = "2025-10-01"
    sr["occurrenceDateTime"] = "2026-01-15"
    c = referral(request)
    assert c is not None
    assert offered(c) == {PMR: True}


def test_existing_referral_coded_pain_clinic_suppresses_pain_medicine():
    """'Refer to pain clinic' (SNOMED 183568002) is a pain referral too: PM&R only."""
    request = load_vignette("referral-suppress-existing-pain-referral")
    find(request, "serviceRequests", "sr-pain-2026-10")["code"] = {
        "coding": [{"system": SNOMED, "code": "183568002", "display": "Refer to pain clinic"}],
        "text": "Pain clinic",
    }
    c = referral(request)
    assert c is not None
    assert offered(c) == {PMR: True}


def test_rheumatology_referral_completed_in_2019_suppresses_rheumatology():
    """Fibromyalgia seen by rheumatology in 2019 (referral completed) and now two failed neck
    TPIs: R1 and R3 (warning). Rheumatology is not offered again — a completed rheumatology
    referral of any date counts — so pain medicine is recommended and the summary names the
    failed injections; the detail says why rheumatology is not suggested."""
    c = referral(load_vignette("referral-suppress-rheumatology-completed-years-ago"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1", "R3"]
    assert offered(c) == {PAIN: True, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-rheum-old")
    assert "under 30 % relief" in c["summary"]
    assert c["summary"].endswith("refer to pain medicine")
    assert "rheumatology" in c["detail"].lower()
    assert "2019" in c["detail"]


def test_fibromyalgia_already_seen_by_rheumatology_without_failed_tpis_gives_no_card():
    """The same patient whose TPIs helped (8 -> 3, 7 -> 3): R3 alone (info), its only candidate
    already referred — no action, no card."""
    request = load_vignette("referral-suppress-rheumatology-completed-years-ago")
    set_score(request, "pain-2026-06-22", 3)
    set_score(request, "pain-2026-09-28", 3)
    assert referral(request) is None


def test_revoked_rheumatology_referral_brings_rheumatology_back():
    """The 2019 rheumatology referral revoked instead of completed: rheumatology offered and
    recommended, and the summary names the fibromyalgia."""
    request = load_vignette("referral-suppress-rheumatology-completed-years-ago")
    find(request, "serviceRequests", "sr-rheum-2019")["status"] = "revoked"
    c = referral(request)
    assert c is not None
    assert offered(c) == {RHEUM: True, PAIN: False, PMR: False}
    assert "fibromyalgia" in c["summary"].lower()
    assert c["summary"].endswith("refer to rheumatology")


def test_active_rheumatology_referral_leaves_fibromyalgia_alone_without_a_card():
    """Fibromyalgia already referred to rheumatology (active, 2026-09-01) and a TPI order: R3
    alone is info and rheumatology is its only candidate — no card."""
    request = load_vignette("referral-r3-fibromyalgia-tpi-order")
    existing_referral(
        request,
        "sr-rheum-2026-09",
        RHEUM,
        "Referral to rheumatologist (procedure)",
        "active",
        "2026-09-01",
    )
    assert referral(request) is None


def test_rheumatology_referral_among_the_draft_orders_suppresses():
    """The clinician is ordering a rheumatology referral in the same session (unselected
    draft): not suggested again; R3 alone then gives no card."""
    request = load_vignette("referral-r3-fibromyalgia-tpi-order")
    request["context"]["draftOrders"]["entry"].append(
        {
            "resource": {
                "resourceType": "ServiceRequest",
                "id": "rheum-1",
                "status": "draft",
                "intent": "order",
                "code": {
                    "coding": [
                        {
                            "system": SNOMED,
                            "code": RHEUM,
                            "display": "Referral to rheumatologist (procedure)",
                        }
                    ]
                },
                "subject": {"reference": "Patient/ref-fibro"},
            }
        }
    )
    assert referral(request) is None


# ---------------------------------------------------------------- patient-view


def test_patient_view_fibromyalgia_without_tpi_history_gets_no_card():
    """Referral rules need TPI context: fibromyalgia alone on patient-view gives nothing."""
    assert evaluate_vignette("referral-pv-fibromyalgia-no-tpi-history") == {"cards": []}


def test_patient_view_fibromyalgia_with_tpi_this_year_suggests_rheumatology():
    """Fibromyalgia and a TPI on 2026-09-21: widespread pain, rheumatology recommended (info)."""
    c = referral(load_vignette("referral-pv-fibromyalgia-recent-tpi"))
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["R3"]
    assert offered(c) == {RHEUM: True}


@pytest.mark.parametrize(
    ("performed", "fires"),
    [
        ("2025-11-23T10:00:00-05:00", True),  # today - 365
        ("2025-11-22T10:00:00-05:00", False),  # today - 366: no TPI context
    ],
)
def test_patient_view_needs_a_tpi_in_the_last_365_days(performed, fires):
    """The fibromyalgia patient's only TPI moved to today - 365 (context) or today - 366 (none)."""
    request = load_vignette("referral-pv-fibromyalgia-recent-tpi")
    find(request, "procedures", "tpi-2026-09-21")["performedDateTime"] = performed
    assert (referral(request) is not None) is fires


def test_patient_view_two_failed_tpis_refers():
    """Patient-view of a patient with two non-responding TPIs this year: R1 card."""
    c = referral(load_vignette("referral-pv-two-failed-tpis"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1"]
    assert offered(c) == {PAIN: True, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-pv-r1")
    for evidence in ("2026-05-11", "2026-08-17", "12 %", "14 %"):
        assert evidence in c["detail"]


# ---------------------------------------------------------------- card content


def test_referral_card_offers_the_referral_override_reasons_and_snoozes():
    """specialist-referral override reasons: patient declined, addressed elsewhere, clinical
    judgment, and the two snoozes."""
    c = referral(load_vignette("referral-r1-two-failed-neck-tpis"))
    assert c is not None
    assert {r["code"] for r in c["overrideReasons"]} == {
        "patient-declined",
        "addressed-elsewhere",
        "clinical-judgment",
        "snooze-30",
        "snooze-90",
    }


@pytest.mark.parametrize("name", sorted(p.stem for p in VIGNETTES.glob("referral-*.json")))
def test_every_referral_vignette_card_is_well_formed(name):
    """Every card of every referral- vignette keeps the engine's promises (conftest); a
    referral card with suggestions recommends exactly one."""
    for c in evaluate_vignette(name)["cards"]:
        assert_well_formed(c)
        assert c["extension"]["tpi-rules"] == sorted(c["extension"]["tpi-rules"])
        if c["source"]["topic"]["code"] == TOPIC and "suggestions" in c:
            assert len(recommended(c)) == 1
