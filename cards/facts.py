"""Clinical facts derived once per request from the record, the orders and the policy.

Each fact is computed on first use, so a rule that never asks pays nothing for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any

from fhir.resources.R4B.codeableconcept import CodeableConcept

from cards.orders import OrderContext
from cards.payer import PayerProfile, payer_profile
from cards.policy import Policies, PolicyProfile
from cards.reading import (
    When,
    allergy_is_active,
    codings,
    concept_text,
    condition_is_active,
    first_when,
    format_number,
    in_value_set,
    matching_coding,
    number,
    onset_or_recorded,
    reference_matches,
)
from cards.record import PatientRecord
from cards.regions import Place, place_of, places_of
from cards.response import (
    PAIN_SCORE_STATUSES,
    PainScore,
    Session,
    SessionResponse,
    pain_scores,
    session_responses,
    tpi_sessions,
    within,
)
from cards.terminology import CLASS_AGENT, Terminology, ValueSet

INACTIVE_REQUEST_STATUSES = ("entered-in-error", "revoked")
OPEN_REQUEST_STATUSES = ("active", "draft", "on-hold")
REFERRAL_VALUE_SETS = {
    "pain": "referral-pain-medicine",
    "rehabilitation": "referral-rehabilitation",
    "rheumatology": "referral-rheumatology",
    "neurology": "referral-neurology",
}
SPECIALTY_VALUE_SETS = {
    "pain": "specialty-pain-medicine",
    "rehabilitation": "specialty-rehabilitation",
    "rheumatology": "specialty-rheumatology",
    "neurology": "specialty-neurology",
}
PLATELET_UNITS_THOUSANDS = {"10*3/ul", "10*9/l", "10^9/l", "k/ul", "10^3/ul", "x10e3/ul", "10e3/ul"}
PLATELET_UNITS_SINGLE = {"/ul"}
ANAPHYLAXIS = "39579001"
ANGIOEDEMA = "41291007"
SEMANTIC_TAG = re.compile(
    r"\s*\((disorder|finding|situation|procedure|regime/therapy|body structure)\)\s*$"
)
STRUCTURE = re.compile(r"^(structure of|entire) |( structure)$", re.IGNORECASE)
# Therapy plan activities that never happened do not count as therapy in place.
DEAD_ACTIVITY_STATUSES = ("cancelled", "stopped", "entered-in-error", "not-started")


def plain(text: str) -> str:
    """A display as a clinician reads it: no SNOMED semantic tag, no "Structure of"."""
    return STRUCTURE.sub("", SEMANTIC_TAG.sub("", text or "").strip()).strip()


BRACKETS = re.compile(r"\s*\[[^\]]*\]")
# ICD-10-CM's residual wording: "Thrombocytopenia, unspecified", "Myalgia, unspecified site".
UNSPECIFIED = re.compile(r",\s*unspecified\b.*$", re.IGNORECASE)
SHORT_CUTS = (" with ", " due to ", " in ", ", ", " of glomerular")
SHORT_NAME = 40


def short(name: str) -> str:
    """A diagnosis as a summary names it: no bracketed code-system wording, and a long
    display cut to its head ("Chronic kidney disease with glomerular filtration rate
    category G5 …" → "Chronic kidney disease")."""
    name = UNSPECIFIED.sub("", BRACKETS.sub("", name)).strip()
    if len(name) <= SHORT_NAME:
        return name
    cut = min((name.find(c) for c in SHORT_CUTS if name.find(c) > 0), default=-1)
    return name[:cut] if cut > 0 else name


def lower_first(text: str) -> str:
    """Lower-case the first letter, unless the word is an acronym ("ITP", "CKD")."""
    if len(text) > 1 and text[1].isupper():
        return text
    return text[:1].lower() + text[1:]


@dataclass(frozen=True)
class Evidence:
    """A recorded fact a card can cite: what, and since / on which day."""

    text: str
    day: date | None = None

    def __str__(self) -> str:
        return f"{self.text} ({self.day.isoformat()})" if self.day else self.text


@dataclass(frozen=True)
class ConditionFact:
    condition: Any
    name: str
    onset: When | None

    @property
    def short_name(self) -> str:
        return short(self.name)

    @property
    def evidence(self) -> Evidence:
        return Evidence(self.name, self.onset.day if self.onset else None)


@dataclass(frozen=True)
class MedicationFact:
    """An active or draft medication: its agent (ingredient) and how it is shown."""

    request: Any
    agent: str
    draft: bool

    @property
    def text(self) -> str:
        if self.draft:
            return f"{self.agent} (in this order)"
        return f"{self.agent} ({self.request.status})"


@dataclass(frozen=True)
class AllergyFact:
    name: str
    agent: str | None
    severe: bool
    reaction: str
    day: date | None
    status_only: bool = False
    intolerance: bool = False


@dataclass(frozen=True)
class LabValue:
    value: Decimal
    day: date
    text: str


class Facts:
    def __init__(
        self,
        record: PatientRecord,
        orders: OrderContext,
        terminology: Terminology,
        policies: Policies,
        today: date,
    ) -> None:
        self.record = record
        self.orders = orders
        self.terminology = terminology
        self.policies = policies
        self.today = today
        # Snooze groups (see card.snooze_group) whose findings are left out for now.
        self.snoozed: frozenset[str] = frozenset()

    # -- payer ------------------------------------------------------------------------

    @cached_property
    def payer(self) -> PayerProfile:
        return payer_profile(self.record.coverages, self.policies, self.terminology, self.today)

    @property
    def policy(self) -> PolicyProfile:
        return self.payer.policy

    # -- conditions -------------------------------------------------------------------

    @cached_property
    def active_conditions(self) -> list[Any]:
        return [c for c in self.record.conditions if condition_is_active(c)]

    def conditions_in(self, value_set_id: str) -> list[ConditionFact]:
        """Active conditions coded in a value set."""
        value_set = self.terminology[value_set_id]
        found = []
        for condition in self.active_conditions:
            coding = matching_coding(condition.code, value_set)
            if coding is not None:
                name = plain(coding.display or concept_text(condition.code) or coding.code)
                found.append(
                    ConditionFact(condition, name, onset_or_recorded(condition, self.today))
                )
        return found

    def recent_conditions_in(self, value_set_id: str, days: int) -> list[ConditionFact]:
        """Active conditions of a set whose onset (or record) is within ``days``; one with
        neither date counts as recent (acute problems stay "active" for years)."""
        earliest = self.today - timedelta(days=days)
        return [
            c
            for c in self.conditions_in(value_set_id)
            if c.onset is None or c.onset.day >= earliest
        ]

    def has_condition(self, value_set_id: str) -> bool:
        return bool(self.conditions_in(value_set_id))

    def order_diagnoses(self, value_set_id: str) -> list[Evidence]:
        """The TPI orders' reasons in a set: reasonCode, and active referenced Conditions."""
        value_set = self.terminology[value_set_id]
        found = []
        for order in self.orders.tpi_orders:
            for system, code, display in order.reason_codes:
                if value_set.contains(system, code):
                    found.append(Evidence(f"{plain(display)} (the order's reason)"))
            for reference in order.reason_references:
                for condition in self.active_conditions:
                    if reference_matches(reference, "Condition", condition.id) and in_value_set(
                        condition.code, value_set
                    ):
                        coding = matching_coding(condition.code, value_set)
                        name = plain(coding.display or concept_text(condition.code))
                        found.append(Evidence(f"{name} (the order's reason)"))
        return found

    def condition_places(self, fact: ConditionFact) -> tuple[Place, ...] | None:
        """A condition's places: its bodySites (known only when every one is), else the
        region its code gives (a site-specific disorder or an ICD-10-CM site axis)."""
        regions = self.terminology["body-regions"]
        condition = fact.condition
        if condition.bodySite:
            return places_of(
                [
                    [(c.system, c.code) for c in concept.coding or []]
                    for concept in condition.bodySite
                ],
                regions,
            )
        place = place_of(((c.system, c.code) for c in codings(condition.code)), regions)
        return (place,) if place else None

    # -- medications and allergies ----------------------------------------------------

    @cached_property
    def active_medications(self) -> list[Any]:
        """Active or on-hold MedicationRequests, and every draft MedicationRequest."""
        record = [m for m in self.record.medication_requests if m.status in ("active", "on-hold")]
        return record + self.orders.drafts.medication_requests

    def is_draft(self, request: Any) -> bool:
        return any(request is d for d in self.orders.drafts.medication_requests)

    def medication_concept(self, request: Any) -> Any:
        if request.medicationCodeableConcept is not None:
            return request.medicationCodeableConcept
        reference = request.medicationReference
        if reference is None:
            return None
        medication = self.record.medications.get(reference.reference or "")
        if medication is None:
            for contained in request.contained or []:
                if f"#{contained.id}" == reference.reference:
                    medication = contained
        if medication is not None and getattr(medication, "code", None) is not None:
            return medication.code
        if reference.display:
            return CodeableConcept(text=reference.display)
        return None

    def agent_of(self, concept: Any, value_set: ValueSet) -> str | None:
        """The agent a concept names in a drug set: by code (named from the code's display),
        else by ingredient, brand or class name in its displays or text."""
        if concept is None:
            return None
        texts = [concept.text or ""] + [c.display or "" for c in codings(concept)]
        coding = matching_coding(concept, value_set)
        if coding is not None:
            listed = next(
                (c.display for c in value_set.concepts if c.code == coding.code and c.display), ""
            )
            for text in (listed, *texts):
                agent = value_set.agent_in(text)
                if agent and agent != CLASS_AGENT:
                    return agent
            return plain(coding.display or concept_text(concept) or coding.code or "").lower()
        for text in texts:
            agent = value_set.agent_in(text)
            if agent:
                return agent
        return None

    def medications_in(
        self, value_set_id: str, requests: list[Any] | None = None
    ) -> list[MedicationFact]:
        value_set = self.terminology[value_set_id]
        found = []
        for request in self.active_medications if requests is None else requests:
            agent = self.agent_of(self.medication_concept(request), value_set)
            if agent:
                found.append(MedicationFact(request, agent, self.is_draft(request)))
        return found

    def draft_medications_in(self, value_set_id: str) -> list[MedicationFact]:
        return self.medications_in(value_set_id, self.orders.drafts.medication_requests)

    def order_names(self, value_set_id: str) -> list[str]:
        """Agents of a set named in a TPI order's details or notes (e.g. "with Kenalog 40")."""
        value_set = self.terminology[value_set_id]
        found = []
        for order in self.orders.tpi_orders:
            for system, code, display in order.detail_codes:
                if value_set.contains(system, code):
                    found.append(value_set.agent_in(display) or plain(display).lower())
            for text in order.texts:
                agent = value_set.agent_in(text)
                if agent and agent != CLASS_AGENT:
                    found.append(agent)
        return list(dict.fromkeys(found))

    @cached_property
    def anesthetic_allergies(self) -> list[AllergyFact]:
        """Active allergies to an amide local anesthetic, and Z88.4 (agent not named)."""
        anesthetics = self.terminology["local-anesthetics"]
        status = self.terminology["anesthetic-allergy-history"]
        found = []
        for allergy in self.record.allergies:
            if not allergy_is_active(allergy):
                continue
            recorded = first_when(allergy.recordedDate, allergy.onsetDateTime, today=self.today)
            day = recorded.day if recorded else None
            agent = self.agent_of(allergy.code, anesthetics)
            if agent is not None:
                name = "amide local anesthetics" if agent == CLASS_AGENT else agent
                found.append(
                    AllergyFact(
                        name,
                        agent,
                        severe_allergy(allergy),
                        reaction_text(allergy),
                        day,
                        intolerance=allergy.type == "intolerance",
                    )
                )
            elif in_value_set(allergy.code, status):
                found.append(
                    AllergyFact("an anesthetic agent (not named)", None, False, "", day, True)
                )
        for condition in self.conditions_in("anesthetic-allergy-history"):
            day = condition.onset.day if condition.onset else None
            found.append(AllergyFact("an anesthetic agent (not named)", None, False, "", day, True))
        return found

    # -- observations -----------------------------------------------------------------

    @cached_property
    def pain_scores(self) -> list[PainScore]:
        return pain_scores(self.record.observations, self.terminology["pain-scores"])

    def observations_in(self, value_set_id: str, window_days: int) -> list[tuple[Any, When]]:
        """Final observations of a value set dated within the window, latest first."""
        value_set = self.terminology[value_set_id]
        found: list[tuple[Any, When]] = []
        for observation in self.record.observations:
            if observation.status not in PAIN_SCORE_STATUSES:
                continue
            if not in_value_set(observation.code, value_set):
                continue
            start = observation.effectivePeriod.start if observation.effectivePeriod else None
            when = first_when(observation.effectiveDateTime, start, observation.effectiveInstant)
            if when is None or not when.precise or not within(when.day, self.today, window_days):
                continue
            found.append((observation, when))
        found.sort(key=lambda item: item[1].instant, reverse=True)
        return found

    def latest_observation(self, value_set_id: str, window_days: int) -> tuple[Any, When] | None:
        found = self.observations_in(value_set_id, window_days)
        return found[0] if found else None

    @cached_property
    def latest_hba1c(self) -> LabValue | None:
        found = self.latest_observation("hba1c", self.policy.hba1c_window_days)
        if found is None:
            return None
        observation, when = found
        quantity = observation.valueQuantity
        value = number(quantity.value) if quantity else None
        if value is None:
            return None
        unit = (quantity.code or quantity.unit or "%").strip()
        if unit.lower() == "mmol/mol":  # IFCC units, converted to NGSP %
            value = (value / Decimal("10.929") + Decimal("2.15")).quantize(Decimal("0.1"))
        return LabValue(value, when.day, f"{format_number(value)} %")

    @cached_property
    def latest_inr(self) -> LabValue | None:
        for observation, when in self.observations_in("inr", self.policy.inr_window_days):
            value = number(observation.valueQuantity.value) if observation.valueQuantity else None
            if value is not None:
                return LabValue(value, when.day, format_number(value))
        return None

    @cached_property
    def latest_platelets(self) -> LabValue | None:
        """The latest usable platelet count (x 10^9/L) within the window; counts in /uL are
        divided by 1000, counts in any other unit or none are not used."""
        for observation, when in self.observations_in(
            "platelet-count", self.policy.platelet_window_days
        ):
            quantity = observation.valueQuantity
            value = number(quantity.value) if quantity else None
            if value is None:
                continue
            unit = (quantity.code or quantity.unit or "").strip().lower().replace(" ", "")
            if unit in PLATELET_UNITS_THOUSANDS:
                count = value
            elif unit in PLATELET_UNITS_SINGLE:
                count = value / 1000
            else:
                continue
            return LabValue(count, when.day, f"{format_number(count)} x 10^9/L")
        return None

    @cached_property
    def pregnancy(self) -> list[Evidence]:
        days = self.policy.pregnancy_window_days
        found = [c.evidence for c in self.recent_conditions_in("pregnancy", days)]
        latest = self.latest_observation("pregnancy-status", days)
        if latest is not None:
            observation, when = latest
            if any(
                c.code == "77386006" and (c.system or "").startswith("http://snomed.info/sct")
                for c in codings(observation.valueCodeableConcept)
            ):
                found.append(Evidence("pregnancy status: pregnant", when.day))
        return found

    # -- sessions and places ----------------------------------------------------------

    @cached_property
    def sessions(self) -> list[Session]:
        return tpi_sessions(self.record.procedures, self.terminology["tpi-procedures"], self.today)

    @cached_property
    def sessions_last_year(self) -> list[Session]:
        return [s for s in self.sessions if within(s.day, self.today, self.policy.lookback_days)]

    @cached_property
    def responses(self) -> list[SessionResponse]:
        """Responses to the sessions of the last year (the next session bounds follow-up)."""
        all_responses = session_responses(self.sessions, self.pain_scores, self.policy)
        recent = set(self.sessions_last_year)
        return [r for r in all_responses if r.session in recent]

    def response_to(self, session: Session) -> SessionResponse | None:
        return next((r for r in self.responses if r.session == session), None)

    @cached_property
    def order_places(self) -> tuple[Place, ...] | None:
        """The TPI orders' places; None (unknown) unless every bodySite's region is known."""
        concepts = [
            [
                (c.get("system"), c.get("code"))
                for c in concept.get("coding") or []
                if isinstance(c, dict)
            ]
            for order in self.orders.tpi_orders
            for concept in order.body_site_concepts
        ]
        return places_of(concepts, self.terminology["body-regions"])

    def session_places(self, session: Session) -> list[Place | None]:
        """Each of a session's sites as a place (None: a site of unknown region)."""
        regions = self.terminology["body-regions"]
        return [
            place_of(((s.system, s.code) for s in concept), regions)
            for concept in session.site_concepts
        ]

    def order_site_roles(self, role: str) -> list[str]:
        """The TPI orders' sites that carry a role of ``body-regions`` (over-lung, ...)."""
        regions = self.terminology["body-regions"]
        found = []
        for order in self.orders.tpi_orders:
            for system, code, display in order.body_sites:
                if role in regions.roles_of(system, code):
                    found.append(plain(display))
        return list(dict.fromkeys(found))

    # -- physical therapy and referrals ----------------------------------------------

    @cached_property
    def active_therapy(self) -> list[Evidence]:
        """Active therapy in place, as the P1 rule defines it."""
        pt = self.terminology["physical-therapy"]
        therapy = self.terminology.role("physical-therapy", "therapy")
        exercise = self.terminology.role("physical-therapy", "exercise")
        msk_plan = self.terminology.role("physical-therapy", "msk-care-plan")
        days = self.policy.pt_lookback_days
        found = []
        for procedure in self.record.procedures:
            if procedure.status in ("completed", "in-progress") and in_value_set(
                procedure.code, pt
            ):
                start = procedure.performedPeriod.start if procedure.performedPeriod else None
                when = first_when(procedure.performedDateTime, start, today=self.today)
                if when and within(when.day, self.today, days):
                    found.append(
                        Evidence(f"therapy session: {_name(procedure.code, pt)}", when.day)
                    )
        for request in self.record.service_requests:
            if not (in_value_set(request.code, pt) or in_value_set(request.category, pt)):
                continue
            authored = first_when(request.authoredOn, today=self.today)
            if request.status == "active":
                found.append(
                    Evidence(
                        f"therapy referral: {_name(request.code, pt)} (active)",
                        authored.day if authored else None,
                    )
                )
            elif request.status == "completed":
                when = latest_recent(self.request_dates(request), self.today, days)
                if when:
                    found.append(
                        Evidence(
                            f"therapy referral: {_name(request.code, pt)} (completed)", when.day
                        )
                    )
        for plan in self.record.care_plans:
            if plan.status != "active":
                continue
            activities = [
                a.detail.code
                for a in plan.activity or []
                if a.detail and a.detail.code and a.detail.status not in DEAD_ACTIVITY_STATUSES
            ]
            start = plan.period.start if plan.period else None
            when = first_when(start, plan.created, today=self.today)
            day = when.day if when else None
            rehab = next(
                (c for c in [*(plan.category or []), *activities] if in_value_set(c, therapy)), None
            )
            if rehab is not None:
                found.append(Evidence(f"rehabilitation care plan: {_name(rehab, therapy)}", day))
                continue
            moves = next((c for c in activities if in_value_set(c, exercise)), None)
            if moves is not None and self._musculoskeletal_plan(plan, msk_plan):
                found.append(
                    Evidence(
                        f"musculoskeletal care plan with {_name(moves, exercise).lower()}", day
                    )
                )
        for request in self.orders.drafts.service_requests:
            if in_value_set(request.code, pt) or in_value_set(request.category, pt):
                found.append(
                    Evidence(f"therapy order in this order set: {_name(request.code, pt)}")
                )
        return found

    def request_dates(self, request: Any) -> list[When]:
        """A request's authoredOn and occurrence (either may date it)."""
        values = (
            request.authoredOn,
            request.occurrenceDateTime,
            request.occurrencePeriod.start if request.occurrencePeriod else None,
            request.occurrencePeriod.end if request.occurrencePeriod else None,
        )
        return [w for w in (When.of(v, today=self.today) for v in values) if w is not None]

    def _musculoskeletal_plan(self, plan: Any, msk_plan: ValueSet) -> bool:
        """A plan for the pain: a musculoskeletal category, or it addresses a pain diagnosis."""
        if any(in_value_set(c, msk_plan) for c in plan.category or []):
            return True
        sets = [
            self.terminology[v]
            for v in (
                "qualifying-diagnoses",
                "regional-pain-diagnoses",
                "fibromyalgia",
                "radiculopathy",
            )
        ]
        for reference in plan.addresses or []:
            for condition in self.record.conditions:
                if reference_matches(reference.reference, "Condition", condition.id) and any(
                    in_value_set(condition.code, s) for s in sets
                ):
                    return True
        return False

    def referral_in_place(self, category: str) -> Evidence | None:
        """A referral of that specialty the patient already has (section 3, suppression)."""
        value_set: ValueSet = self.terminology[REFERRAL_VALUE_SETS[category]]
        for request in self.orders.drafts.service_requests:
            if in_value_set(request.code, value_set):
                return Evidence(f"{_name(request.code, value_set)} in this order set")
        for request in self.record.service_requests:
            if request.status in INACTIVE_REQUEST_STATUSES or not in_value_set(
                request.code, value_set
            ):
                continue
            dates = self.request_dates(request)
            recent_when = latest_recent(dates, self.today, self.policy.referral_lookback_days)
            recent = recent_when is not None
            when = recent_when or (dates[0] if dates else None)
            lasting = category == "rheumatology" and request.status == "completed"
            if request.status in OPEN_REQUEST_STATUSES or recent or lasting:
                return Evidence(
                    f"{_name(request.code, value_set)} ({request.status})",
                    when.day if when else None,
                )
        return None

    @cached_property
    def user_specialties(self) -> set[str]:
        """Referral categories matching the ordering user's PractitionerRole specialty."""
        user = self.orders.user_reference or ""
        categories: set[str] = set()
        for role in self.record.practitioner_roles:
            if (
                user.startswith("PractitionerRole/")
                and role.id
                and not user.endswith(f"/{role.id}")
            ):
                continue
            for category, value_set_id in SPECIALTY_VALUE_SETS.items():
                if any(
                    in_value_set(s, self.terminology[value_set_id]) for s in role.specialty or []
                ):
                    categories.add(category)
        return categories

    def first_qualifying_condition(self) -> Any | None:
        value_set = self.terminology["qualifying-diagnoses"]
        return next(
            (c for c in self.active_conditions if in_value_set(c.code, value_set) and c.id), None
        )


def latest_recent(dates: list[When], today: date, days: int) -> When | None:
    """The latest of several dates that falls within the lookback, if any does."""
    recent = [w for w in dates if within(w.day, today, days)]
    return max(recent, key=lambda w: w.day) if recent else None


def _name(concept: Any, value_set: ValueSet) -> str:
    coding = matching_coding(concept, value_set)
    if coding is not None and coding.display:
        return plain(coding.display)
    return plain(concept_text(concept)) or "unnamed"


def severe_allergy(allergy: Any) -> bool:
    """Section 1: not an intolerance and not low criticality — or a severe reaction,
    anaphylaxis or angioedema, whatever the type."""
    for reaction in allergy.reaction or []:
        if reaction.severity == "severe":
            return True
        for manifestation in reaction.manifestation or []:
            if any(c.code in (ANAPHYLAXIS, ANGIOEDEMA) for c in codings(manifestation)):
                return True
            text = concept_text(manifestation).lower()
            if "anaphyla" in text or "angioedema" in text:
                return True
    if "anaphyla" in concept_text(allergy.code).lower():  # "Xylocaine (anaphylaxis)"
        return True
    return allergy.type != "intolerance" and allergy.criticality != "low"


def reaction_text(allergy: Any) -> str:
    names = [
        plain(concept_text(m)).lower()
        for reaction in allergy.reaction or []
        for m in reaction.manifestation or []
    ]
    return ", ".join(dict.fromkeys(n for n in names if n))
