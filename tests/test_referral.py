"""Clinical vignettes for the specialist-referral topic (rules R1-R5, suppression, patient-view)."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import card, evaluate, evaluate_vignette, load_vignette, resource

TOPIC = "specialist-referral"
SNOMED = "http://snomed.info/sct"
PAIN = "306265007"
PMR = "306289000"
RHEUM = "306290009"
NEURO = "308474002"


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


# ---------------------------------------------------------------- R1


def test_r1_two_non_responding_sessions_refer_to_pain_medicine_first():
    """Two TPIs in the year, each under 30 % relief and under 2 points: refer, pain medicine
    recommended, PM&R offered; the detail shows each session's date and relief."""
    c = card(evaluate_vignette("referral-r1-two-failed-neck-tpis"), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert offered(c) == {PAIN: True, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-r1")
    for evidence in ("2026-05-11", "2026-08-17", "12 %", "14 %"):
        assert evidence in c["detail"]


def test_r1_not_when_one_of_the_two_sessions_helped():
    """One non-responder (8 -> 7) and one responder (7 -> 3, 57 %) is not 'failed a few
    injections': no referral card."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    resource(request, "observations", "pain-2026-10-05")["valueQuantity"]["value"] = 3
    assert card(evaluate(request), TOPIC) is None


# ---------------------------------------------------------------- R2


def test_r2_three_sessions_reach_the_medicare_cap_whatever_the_response():
    """Three TPIs in 12 months, each with good relief: recurrent pain, specialist reassessment."""
    c = card(evaluate_vignette("referral-r2-three-sessions-good-relief"), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert offered(c) == {PAIN: True, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-r2")
    for session in ("2026-01-12", "2026-05-04", "2026-09-28"):
        assert session in c["detail"]


def test_r2_not_under_the_commercial_cap_of_four():
    """The same three good sessions stay under the commercial cap (4): no referral card."""
    response = evaluate_vignette("referral-r2-three-sessions-good-relief", profile="commercial")
    assert card(response, TOPIC) is None


def test_r2_session_366_days_ago_is_outside_the_year():
    """The oldest TPI moved to 2025-11-22 (366 days ago) leaves two sessions in the year."""
    request = load_vignette("referral-r2-three-sessions-good-relief")
    resource(request, "procedures", "tpi-2026-01-12")["performedDateTime"] = (
        "2025-11-22T10:00:00-05:00"
    )
    assert card(evaluate(request), TOPIC) is None


def test_r2_session_exactly_365_days_ago_is_inside_the_year():
    """'In the last 365 days' includes today - 365 days (2025-11-23)."""
    request = load_vignette("referral-r2-three-sessions-good-relief")
    resource(request, "procedures", "tpi-2026-01-12")["performedDateTime"] = (
        "2025-11-23T10:00:00-05:00"
    )
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"


# ---------------------------------------------------------------- R3


def test_r3_fibromyalgia_with_tpi_order_suggests_rheumatology():
    """Active fibromyalgia and a TPI order: widespread pain, rheumatology recommended (info),
    pain medicine and PM&R still offered."""
    c = card(evaluate_vignette("referral-r3-fibromyalgia-tpi-order"), TOPIC)
    assert c is not None
    assert c["indicator"] == "info"
    assert offered(c) == {RHEUM: True, PAIN: False, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-fibro")


def test_r3_fibromyalgia_coded_in_snomed_counts():
    """Fibromyalgia on the problem list as SNOMED 203082005 counts like M79.7."""
    request = load_vignette("referral-r3-fibromyalgia-tpi-order")
    resource(request, "conditions", "cond-ref-fibro-m797")["code"] = {
        "coding": [{"system": SNOMED, "code": "203082005", "display": "Fibromyalgia (disorder)"}],
        "text": "Fibromyalgia",
    }
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert recommended(c) == [RHEUM]


def test_r3_resolved_fibromyalgia_gives_no_referral():
    """A resolved fibromyalgia entry is not active: no widespread-pain finding, no card."""
    request = load_vignette("referral-r3-fibromyalgia-tpi-order")
    resolve(resource(request, "conditions", "cond-ref-fibro-m797"))
    assert card(evaluate(request), TOPIC) is None


def test_r3_sessions_at_three_body_sites_suggest_rheumatology():
    """TPIs at neck and shoulder (one day) and lower back in the year: widespread pain (info),
    rheumatology recommended."""
    c = card(evaluate_vignette("referral-r3-three-body-sites"), TOPIC)
    assert c is not None
    assert c["indicator"] == "info"
    assert offered(c) == {RHEUM: True, PAIN: False, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-sites")


def test_r3_session_without_body_site_does_not_count():
    """The lower-back session recorded without a bodySite leaves two known sites: no card."""
    request = load_vignette("referral-r3-three-body-sites")
    del resource(request, "procedures", "tpi-2026-08-31")["bodySite"]
    assert card(evaluate(request), TOPIC) is None


def test_r3_with_r1_is_a_warning_and_still_recommends_rheumatology():
    """Widespread sessions that also failed (8 -> 7 twice): warning; rheumatology stays the most
    specific candidate."""
    request = load_vignette("referral-r3-three-body-sites")
    resource(request, "observations", "pain-2026-06-01")["valueQuantity"]["value"] = 7
    resource(request, "observations", "pain-2026-10-12")["valueQuantity"]["value"] = 7
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert offered(c) == {RHEUM: True, PAIN: False, PMR: False}


# ---------------------------------------------------------------- R4


def test_r4_tension_headache_with_failed_tpis_recommends_neurology():
    """R1 with an active tension-type headache (G44.209): neurology recommended, pain medicine and
    PM&R offered."""
    c = card(evaluate_vignette("referral-r4-tension-headache-failed-tpis"), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert offered(c) == {NEURO: True, PAIN: False, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-r4")


def test_r4_migraine_with_failed_tpis_recommends_neurology():
    """Migraine (G43.909) is a headache phenotype too."""
    request = load_vignette("referral-r4-tension-headache-failed-tpis")
    resource(request, "conditions", "cond-ref-r4-g44209")["code"] = {
        "coding": [
            {
                "system": "http://hl7.org/fhir/sid/icd-10-cm",
                "code": "G43.909",
                "display": "Migraine, unspecified, not intractable, without status migrainosus",
            }
        ],
        "text": "Migraine",
    }
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert recommended(c) == [NEURO]


def test_r4_resolved_headache_leaves_pain_medicine_recommended():
    """Headache resolved: plain R1, no neurology suggestion."""
    request = load_vignette("referral-r4-tension-headache-failed-tpis")
    resolve(resource(request, "conditions", "cond-ref-r4-g44209"))
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert offered(c) == {PAIN: True, PMR: False}


def test_r4_headache_without_r1_or_r2_gives_no_referral():
    """Headache alone (second TPI helped, 7 -> 3): no R1/R2, so no neurology referral either."""
    request = load_vignette("referral-r4-tension-headache-failed-tpis")
    resource(request, "observations", "pain-2026-10-05")["valueQuantity"]["value"] = 3
    assert card(evaluate(request), TOPIC) is None


# ---------------------------------------------------------------- R5


def test_r5_radiculopathy_suggests_pmr_only():
    """Lumbar radiculopathy (M54.16) with a lumbar TPI order: pain possibly not myofascial (info),
    one suggestion, PM&R, recommended."""
    c = card(evaluate_vignette("referral-r5-lumbar-radiculopathy"), TOPIC)
    assert c is not None
    assert c["indicator"] == "info"
    assert offered(c) == {PMR: True}
    assert_referral_suggestions_well_formed(c, "ref-radic")


def test_r5_sciatica_counts_like_radiculopathy():
    """Lumbago with sciatica (M54.41) fires the same PM&R evaluation."""
    request = load_vignette("referral-r5-lumbar-radiculopathy")
    resource(request, "conditions", "cond-ref-radic-m5416")["code"] = {
        "coding": [
            {
                "system": "http://hl7.org/fhir/sid/icd-10-cm",
                "code": "M54.41",
                "display": "Lumbago with sciatica, right side",
            }
        ],
        "text": "Lumbago with sciatica, right side",
    }
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert offered(c) == {PMR: True}


def test_r5_resolved_radiculopathy_gives_no_referral():
    request = load_vignette("referral-r5-lumbar-radiculopathy")
    resolve(resource(request, "conditions", "cond-ref-radic-m5416"))
    assert card(evaluate(request), TOPIC) is None


# ---------------------------------------------------------------- suppression


def _with_specialty(system: str, code: str, display: str) -> dict[str, Any]:
    request = load_vignette("referral-suppress-pain-physician-orders")
    request["prefetch"]["practitionerRole"]["specialty"] = [
        {"coding": [{"system": system, "code": code, "display": display}], "text": display}
    ]
    return request


def test_pain_physician_is_not_told_to_refer_to_pain_medicine():
    """The ordering user is a pain physician (NUCC 208VP0000X): no pain medicine suggestion,
    PM&R becomes the recommended one."""
    c = card(evaluate_vignette("referral-suppress-pain-physician-orders"), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert offered(c) == {PMR: True}
    assert_referral_suggestions_well_formed(c, "ref-painmd")


def test_pain_specialty_in_snomed_suppresses_pain_medicine():
    """Specialty coded SNOMED 394882004 'Pain management' is the same specialty."""
    c = card(evaluate(_with_specialty(SNOMED, "394882004", "Pain management")), TOPIC)
    assert c is not None
    assert offered(c) == {PMR: True}


def test_family_physician_gets_the_pain_medicine_suggestion():
    """A family physician's own specialty suppresses nothing."""
    request = _with_specialty("http://nucc.org/provider-taxonomy", "207Q00000X", "Family Medicine")
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert offered(c) == {PAIN: True, PMR: False}


def test_pmr_pain_physician_suppresses_every_candidate_but_card_explains():
    """A PM&R pain physician (2081P2900X) counts as pain and PM&R: every candidate suppressed,
    the card still explains the finding, without suggestions or selectionBehavior."""
    request = _with_specialty(
        "http://nucc.org/provider-taxonomy",
        "2081P2900X",
        "Physical Medicine & Rehabilitation, Pain Medicine",
    )
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert "suggestions" not in c
    assert "selectionBehavior" not in c
    assert "2026-05-11" in c["detail"] and "2026-08-17" in c["detail"]


def test_existing_active_pain_referral_suppresses_pain_suggestion():
    """An active pain-clinic referral (306265007) already exists: suggest PM&R only."""
    c = card(evaluate_vignette("referral-suppress-existing-pain-referral"), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert offered(c) == {PMR: True}


@pytest.mark.parametrize("status", ["revoked", "entered-in-error"])
def test_revoked_or_erroneous_pain_referral_does_not_suppress(status):
    """A revoked (or entered-in-error) pain referral is no referral: pain medicine is offered
    and recommended again."""
    request = load_vignette("referral-suppress-existing-pain-referral")
    resource(request, "serviceRequests", "sr-pain-2026-10")["status"] = status
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert offered(c) == {PAIN: True, PMR: False}


def test_pain_referral_completed_this_year_suppresses():
    """A pain referral completed, authored 2026-06-01 (in the last 365 days): still suppressed."""
    request = load_vignette("referral-suppress-existing-pain-referral")
    sr = resource(request, "serviceRequests", "sr-pain-2026-10")
    sr["status"] = "completed"
    sr["authoredOn"] = "2026-06-01"
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert offered(c) == {PMR: True}


def test_pain_referral_completed_over_a_year_ago_does_not_suppress():
    """A pain referral completed, authored 2025-10-01 (418 days ago): offer pain medicine again."""
    request = load_vignette("referral-suppress-existing-pain-referral")
    sr = resource(request, "serviceRequests", "sr-pain-2026-10")
    sr["status"] = "completed"
    sr["authoredOn"] = "2025-10-01"
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert offered(c) == {PAIN: True, PMR: False}


# ---------------------------------------------------------------- patient-view


def test_patient_view_fibromyalgia_without_tpi_history_gets_no_card():
    """Referral rules need TPI context: fibromyalgia alone on patient-view gives nothing."""
    assert evaluate_vignette("referral-pv-fibromyalgia-no-tpi-history") == {"cards": []}


def test_patient_view_fibromyalgia_with_tpi_this_year_suggests_rheumatology():
    """Fibromyalgia and a TPI on 2026-09-21: widespread pain, rheumatology recommended (info)."""
    c = card(evaluate_vignette("referral-pv-fibromyalgia-recent-tpi"), TOPIC)
    assert c is not None
    assert c["indicator"] == "info"
    assert offered(c) == {RHEUM: True, PAIN: False, PMR: False}


def test_patient_view_two_failed_tpis_refers():
    """Patient-view of a patient with two non-responding TPIs this year: R1 card."""
    c = card(evaluate_vignette("referral-pv-two-failed-tpis"), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert offered(c) == {PAIN: True, PMR: False}
    assert_referral_suggestions_well_formed(c, "ref-pv-r1")
    for evidence in ("2026-05-11", "2026-08-17", "12 %", "14 %"):
        assert evidence in c["detail"]


# ---------------------------------------------------------------- more candidates and sessions


def test_r5_with_r1_offers_pain_medicine_and_pmr():
    """Radiculopathy on top of two failed TPIs is no longer 'R5 alone': pain medicine and PM&R
    both offered, pain medicine recommended, warning."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    radiculopathy = load_vignette("referral-r5-lumbar-radiculopathy")["prefetch"]["conditions"][
        "entry"
    ][1]
    request["prefetch"]["conditions"]["entry"].append(radiculopathy)
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert offered(c) == {PAIN: True, PMR: False}


def test_r3_refuted_fibromyalgia_gives_no_referral():
    """A fibromyalgia entry marked refuted is not active."""
    request = load_vignette("referral-r3-fibromyalgia-tpi-order")
    status = resource(request, "conditions", "cond-ref-fibro-m797")["verificationStatus"]
    status["coding"][0].update(code="refuted", display="refuted")
    assert card(evaluate(request), TOPIC) is None


def test_r3_site_injected_over_a_year_ago_does_not_count():
    """The lower-back session moved to 2025-10-01 (418 days ago): two sites in the year."""
    request = load_vignette("referral-r3-three-body-sites")
    resource(request, "procedures", "tpi-2026-08-31")["performedDateTime"] = (
        "2025-10-01T10:00:00-05:00"
    )
    assert card(evaluate(request), TOPIC) is None


@pytest.mark.parametrize("status", ["entered-in-error", "not-done"])
def test_r2_procedure_entered_in_error_or_not_done_is_no_session(status):
    """One of the three Procedures entered-in-error (or not done) leaves two sessions: no R2."""
    request = load_vignette("referral-r2-three-sessions-good-relief")
    resource(request, "procedures", "tpi-2026-05-04")["status"] = status
    assert card(evaluate(request), TOPIC) is None


def test_existing_referral_coded_pain_clinic_suppresses_pain_medicine():
    """'Refer to pain clinic' (SNOMED 183568002) is a pain referral too: PM&R only."""
    request = load_vignette("referral-suppress-existing-pain-referral")
    resource(request, "serviceRequests", "sr-pain-2026-10")["code"] = {
        "coding": [{"system": SNOMED, "code": "183568002", "display": "Refer to pain clinic"}],
        "text": "Pain clinic",
    }
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert offered(c) == {PMR: True}


def test_existing_rheumatology_referral_moves_recommendation_to_pain_medicine():
    """Fibromyalgia already referred to rheumatology (active, 2026-09-01): rheumatology is not
    offered again; pain medicine becomes the recommended one."""
    request = load_vignette("referral-r3-fibromyalgia-tpi-order")
    request["prefetch"]["serviceRequests"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [
            {
                "fullUrl": "urn:uuid:0b0e6a52-55a4-4c55-9a43-7cc2a6b1e0d1",
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": "sr-rheum-2026-09",
                    "status": "active",
                    "intent": "order",
                    "code": {
                        "coding": [
                            {
                                "system": SNOMED,
                                "code": RHEUM,
                                "display": "Referral to rheumatologist (procedure)",
                            }
                        ],
                        "text": "Rheumatology: fibromyalgia management",
                    },
                    "subject": {"reference": "Patient/ref-fibro"},
                    "authoredOn": "2026-09-01",
                },
                "search": {"mode": "match"},
            }
        ],
    }
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert offered(c) == {PAIN: True, PMR: False}


def test_neurologist_ordering_is_not_told_to_refer_to_neurology():
    """R4 patient, but the ordering user is a neurologist (NUCC 2084N0400X): neurology is not
    offered; pain medicine is recommended."""
    request = load_vignette("referral-r4-tension-headache-failed-tpis")
    request["context"]["userId"] = "PractitionerRole/role-neuro-1"
    request["prefetch"]["practitionerRole"] = {
        "resourceType": "PractitionerRole",
        "id": "role-neuro-1",
        "active": True,
        "practitioner": {"reference": "Practitioner/dr-lindahl"},
        "specialty": [
            {
                "coding": [
                    {
                        "system": "http://nucc.org/provider-taxonomy",
                        "code": "2084N0400X",
                        "display": "Psychiatry & Neurology, Neurology",
                    }
                ],
                "text": "Neurology",
            }
        ],
    }
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert offered(c) == {PAIN: True, PMR: False}
