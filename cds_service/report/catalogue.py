"""The rule catalogue: every rule id the engine can emit, what fires it, and what it reads.

Kept here as a table (not parsed from prose) so that a governance committee reads the same
list the tests check against the engine's code: a rule added to ``cards/`` without a row
here, or a row for a rule the engine no longer emits, fails ``tests/test_report.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cards.card import TOPICS
from cards.payer import PAYER_VALUE_SETS
from cards.terminology import BUILTIN_DIR, Terminology


@dataclass(frozen=True)
class Rule:
    """One rule as the clinical rules page (version 2, section 3) states it."""

    id: str
    topic: str
    indicators: tuple[str, ...]
    fires_when: str
    value_sets: tuple[str, ...]
    # Policy profile settings (cards.policy.PolicyProfile fields) the rule reads.
    thresholds: tuple[str, ...] = ()
    note: str = ""

    @property
    def topic_display(self) -> str:
        return TOPICS[self.topic]


_REFERRAL_SETS = ("specialty-pain-medicine", "specialty-rehabilitation")

RULES: tuple[Rule, ...] = (
    Rule(
        "S1",
        "tpi-safety",
        ("critical", "warning"),
        "A recent (onset within the window) active skin / soft-tissue or systemic infection. "
        "Critical (do not inject; remove the TPI order) when systemic, at the order's region, "
        "or where either region is unknown; warning when it is elsewhere. A critical S1 card "
        "is sent alone.",
        ("skin-soft-tissue-infection", "systemic-infection", "body-regions"),
        ("infection_recent_days",),
    ),
    Rule(
        "S2",
        "tpi-safety",
        ("critical", "warning"),
        "An active allergy to an amide local anesthetic (by code, ingredient, brand or class "
        "name) or Z88.4. Critical when severe, warning otherwise; suggests removing the "
        "anesthetic draft, never the TPI order.",
        ("local-anesthetics", "anesthetic-allergy-history"),
    ),
    Rule(
        "S3",
        "tpi-safety",
        ("info", "warning"),
        "An active anticoagulant or P2Y12 antiplatelet (or Z79.01). Info by default; warning "
        "with a high INR, low platelets, two or more antithrombotic agents, severe liver or "
        "kidney disease, or a non-compressible injection site.",
        (
            "anticoagulants",
            "aspirin",
            "long-term-anticoagulant-use",
            "inr",
            "platelet-count",
            "severe-liver-kidney-disease",
            "body-regions",
        ),
        ("inr_threshold", "inr_window_days", "platelet_threshold", "platelet_window_days"),
    ),
    Rule(
        "S4",
        "tpi-safety",
        ("info", "warning"),
        "An active bleeding disorder (not the purpuras), or a low recent platelet count with "
        "no such diagnosis. Warning; info for a thrombocytopenia with a stable recent count.",
        ("bleeding-disorders", "thrombocytopenia", "platelet-count"),
        ("platelet_threshold", "platelet_window_days"),
    ),
    Rule(
        "S5",
        "tpi-safety",
        ("warning",),
        "A corticosteroid is part of the order and the patient has uncontrolled diabetes "
        "(coded, or a recent HbA1c at or above the threshold); suggests removing the steroid.",
        ("corticosteroids", "uncontrolled-diabetes", "hba1c"),
        ("hba1c_threshold", "hba1c_window_days"),
    ),
    Rule(
        "S6",
        "tpi-safety",
        ("warning",),
        "A corticosteroid is part of the order and the patient is pregnant (a recent pregnancy "
        "condition or pregnancy-status observation); suggests removing the steroid.",
        ("corticosteroids", "pregnancy", "pregnancy-status"),
        ("pregnancy_window_days",),
    ),
    Rule(
        "S7",
        "tpi-safety",
        ("info",),
        "The TPI order has a site over the lung (pneumothorax risk: superficial, tangential "
        "technique; consider ultrasound).",
        ("body-regions",),
    ),
    Rule(
        "E0",
        "tpi-eligibility",
        ("info",),
        "None of E1-E5 fires and the site has turned criteria-met cards on.",
        ("qualifying-diagnoses", "tpi-procedures", "pain-scores"),
        ("show_criteria_met", "session_cap"),
        note="Off unless the site sets show_criteria_met.",
    ),
    Rule(
        "E1",
        "tpi-eligibility",
        ("warning",),
        "No qualifying diagnosis (myalgia / myofascial pain M79.1x or tension-type headache "
        "G44.2x) on the problem list or the order.",
        ("qualifying-diagnoses", "regional-pain-diagnoses"),
    ),
    Rule(
        "E2",
        "tpi-eligibility",
        ("warning",),
        "Active fibromyalgia and no qualifying diagnosis: tender points are not trigger points.",
        ("fibromyalgia", "qualifying-diagnoses"),
    ),
    Rule(
        "E3",
        "tpi-eligibility",
        ("warning",),
        "Sessions in the last 12 months already reach the profile's cap; names the date a "
        "session is within the limit again and suggests removing the order.",
        ("tpi-procedures",),
        ("session_cap", "lookback_days"),
    ),
    Rule(
        "E4",
        "tpi-eligibility",
        ("warning",),
        "The last session in the order's region (or of unknown region) was fewer than the "
        "profile's minimum interval ago; names the date the interval ends.",
        ("tpi-procedures", "body-regions"),
        ("min_interval_days",),
    ),
    Rule(
        "E5",
        "tpi-eligibility",
        ("warning", "info"),
        "The most recent relevant session was a payer non-responder (warning) or its payer "
        "response is unknown (info): a repeat needs lasting relief under the profile.",
        ("tpi-procedures", "pain-scores", "body-regions"),
        ("payer_relief", "payer_follow_up_min_days", "follow_up_min_days", "follow_up_max_days"),
    ),
    Rule(
        "E6",
        "tpi-eligibility",
        ("info",),
        "No pain score in the recent window: record a 0-10 baseline today.",
        ("pain-scores",),
        ("recent_pain_score_days",),
    ),
    Rule(
        "E7",
        "tpi-eligibility",
        ("info",),
        "Imaging guidance (ultrasound or fluoroscopy) is among the draft orders: likely not "
        "covered for TPIs.",
        ("imaging-guidance",),
    ),
    Rule(
        "P1",
        "pt-integration",
        ("info", "warning"),
        "Order time: no active therapy in place (PT/OT, home exercise, a musculoskeletal "
        "exercise plan). Info for a first TPI, warning for a repeat; suggests a PT referral.",
        ("physical-therapy", "pt-performer", "tpi-procedures"),
        ("pt_lookback_days", "pt_referral_window_days"),
    ),
    Rule(
        "P2",
        "pt-integration",
        ("info",),
        "Patient view: a TPI session in the recent window and no active therapy in place; "
        "suggests a PT referral.",
        ("physical-therapy", "pt-performer", "tpi-procedures"),
        ("pt_after_tpi_days", "pt_lookback_days", "pt_referral_window_days"),
    ),
    Rule(
        "R1",
        "specialist-referral",
        ("warning",),
        "Enough clinical non-responder sessions in the last year: refer to pain medicine or PM&R.",
        (
            "tpi-procedures",
            "pain-scores",
            "referral-pain-medicine",
            "referral-rehabilitation",
            *_REFERRAL_SETS,
        ),
        (
            "nonresponder_referral_count",
            "clinical_relief",
            "clinical_drop",
            "clinical_nonresponse_by_day",
            "referral_lookback_days",
        ),
    ),
    Rule(
        "R2",
        "specialist-referral",
        ("info", "warning"),
        "Recurrent pain: sessions in the last year reach the profile's cap, whatever the "
        "response (warning together with R1).",
        ("tpi-procedures", "referral-pain-medicine", "referral-rehabilitation", *_REFERRAL_SETS),
        ("session_cap", "referral_lookback_days"),
    ),
    Rule(
        "R3",
        "specialist-referral",
        ("info", "warning"),
        "Widespread pain: active fibromyalgia, or sessions in enough of the 5 ACR regions; "
        "refer to rheumatology (warning together with R1).",
        (
            "fibromyalgia",
            "tpi-procedures",
            "body-regions",
            "referral-rheumatology",
            "specialty-rheumatology",
        ),
        ("widespread_region_count", "referral_lookback_days"),
    ),
    Rule(
        "R4",
        "specialist-referral",
        ("info", "warning"),
        "R1 or R2 with a headache phenotype (tension-type headache, or a recent migraine) and "
        "a session at a head, jaw, neck or shoulder site: refer to neurology.",
        (
            "tension-type-headache",
            "migraine",
            "body-regions",
            "referral-neurology",
            "specialty-neurology",
        ),
        ("migraine_recent_days", "referral_lookback_days"),
    ),
    Rule(
        "R5",
        "specialist-referral",
        ("info",),
        "Active radiculopathy or sciatica: pain possibly not myofascial, PM&R evaluation "
        "(suppressed for a pain physician).",
        ("radiculopathy", "referral-rehabilitation", "specialty-rehabilitation"),
        ("referral_lookback_days",),
    ),
)

RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}


@dataclass(frozen=True)
class ValueSetRow:
    """A value set as the committee reviews it: how many codes, and whose list it is."""

    id: str
    title: str
    codes: int
    by_system: tuple[tuple[str, int], ...]
    families: tuple[str, ...]
    origin: str
    site_file: str | None
    rules: tuple[str, ...]
    # Read outside the rules: the payer value sets pick the patient's policy profile.
    also: str = ""


SYSTEM_NAMES = {
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://snomed.info/sct": "SNOMED CT",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://www.ama-assn.org/go/cpt": "CPT",
}


def value_set_rows(terminology: Terminology, site_dir: str | None) -> list[ValueSetRow]:
    """Every value set the rules read, with code counts and where a site replaced it."""
    site = _site_files(site_dir)
    used: dict[str, list[str]] = {}
    for rule in RULES:
        for vid in rule.value_sets:
            used.setdefault(vid, []).append(rule.id)
    rows = []
    for vid in sorted(set(terminology) | set(used)):
        value_set = terminology.get(vid)
        by_system: dict[str, int] = {}
        for concept in value_set.concepts if value_set else ():
            label = SYSTEM_NAMES.get(concept.system, concept.system or "text")
            by_system[label] = by_system.get(label, 0) + 1
        families = tuple(
            f"{root}*"
            for roots in (value_set.families.values() if value_set else ())
            for root in roots
        )
        origin, site_file = site.get(vid, ("packaged", None))
        rows.append(
            ValueSetRow(
                id=vid,
                title=value_set.title if value_set else "(missing)",
                codes=len(value_set.concepts) if value_set else 0,
                by_system=tuple(sorted(by_system.items())),
                families=families,
                origin=origin,
                site_file=site_file,
                rules=tuple(used.get(vid, ())),
                also="the patient's payer profile" if vid in PAYER_VALUE_SETS.values() else "",
            )
        )
    return rows


def _site_files(site_dir: str | None) -> dict[str, tuple[str, str]]:
    """Which value sets a site folder replaced, extended (includes ours) or added, by the
    same matching ``Terminology.load`` uses (url first, then id)."""
    if not site_dir:
        return {}
    builtin = {}
    for path in sorted(BUILTIN_DIR.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        builtin[doc["id"]] = doc.get("url")
    by_url = {url: vid for vid, url in builtin.items()}
    found = {}
    for path in sorted(Path(site_dir).glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        target = by_url.get(doc.get("url")) or doc.get("id")
        if target not in builtin:
            found[target] = ("added by the site", path.name)
            continue
        includes = [
            canonical.split("|")[0]
            for include in doc.get("compose", {}).get("include", [])
            for canonical in include.get("valueSet", [])
        ]
        how = "extended by the site" if builtin[target] in includes else "replaced by the site"
        found[target] = (how, path.name)
    return found
