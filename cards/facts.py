"""Clinical facts derived once per request from the record, the orders and the policy.

Each fact is computed on first use, so a rule that never asks pays nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cached_property
from typing import Any

from fhir.resources.R4B.codeableconcept import CodeableConcept

from cards.orders import OrderContext
from cards.policy import PolicyProfile
from cards.reading import (
    When,
    allergy_is_active,
    condition_is_active,
    first_when,
    in_value_set,
    label,
    name_match,
    number,
)
from cards.record import PatientRecord
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
from cards.terminology import Terminology, ValueSet

INACTIVE_REQUEST_STATUSES = ("entered-in-error", "revoked")
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


@dataclass(frozen=True)
class Evidence:
    """A recorded fact a card can cite: what, and since / on which day."""

    text: str
    day: date | None = None

    def __str__(self) -> str:
        return f"{self.text} ({self.day.isoformat()})" if self.day else self.text


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
        policy: PolicyProfile,
        today: date,
    ) -> None:
        self.record = record
        self.orders = orders
        self.terminology = terminology
        self.policy = policy
        self.today = today

    # -- conditions -------------------------------------------------------------------

    @cached_property
    def active_conditions(self) -> list[Any]:
        return [c for c in self.record.conditions if condition_is_active(c)]

    def conditions_in(self, value_set_id: str) -> list[Evidence]:
        """Active conditions coded in a value set, as evidence with their onset day."""
        value_set = self.terminology[value_set_id]
        found = []
        for condition in self.active_conditions:
            if in_value_set(condition.code, value_set):
                onset = first_when(
                    condition.onsetDateTime, condition.recordedDate, today=self.today
                )
                found.append(
                    Evidence(label(condition.code, value_set), onset.day if onset else None)
                )
        return found

    def has_condition(self, value_set_id: str) -> bool:
        return bool(self.conditions_in(value_set_id))

    # -- medications and allergies ----------------------------------------------------

    @cached_property
    def active_medications(self) -> list[Any]:
        """Active or on-hold MedicationRequests, and every draft MedicationRequest."""
        record = [m for m in self.record.medication_requests if m.status in ("active", "on-hold")]
        return record + self.orders.drafts.medication_requests

    def _medication_concept(self, request: Any) -> Any:
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

    def medications_in(
        self, value_set_id: str, requests: list[Any] | None = None
    ) -> list[Evidence]:
        value_set = self.terminology[value_set_id]
        found = []
        for request in self.active_medications if requests is None else requests:
            name = name_match(self._medication_concept(request), value_set)
            if name:
                authored = first_when(request.authoredOn, today=self.today)
                draft = any(request is d for d in self.orders.drafts.medication_requests)
                text = f"{name} (in this order)" if draft else name
                found.append(Evidence(text, None if draft or authored is None else authored.day))
        return found

    def draft_medications_in(self, value_set_id: str) -> list[Evidence]:
        return self.medications_in(value_set_id, self.orders.drafts.medication_requests)

    def anesthetic_allergies(self) -> list[Evidence]:
        anesthetics = self.terminology["local-anesthetics"]
        history = self.terminology["anesthetic-allergy-history"]
        found = []
        for allergy in self.record.allergies:
            if not allergy_is_active(allergy):
                continue
            name = name_match(allergy.code, anesthetics)
            if name is None and in_value_set(allergy.code, history):
                name = label(allergy.code, history)
            if name:
                recorded = first_when(allergy.recordedDate, allergy.onsetDateTime, today=self.today)
                found.append(Evidence(f"allergy to {name}", recorded.day if recorded else None))
        found += [
            Evidence(f"history: {e.text}", e.day)
            for e in self.conditions_in("anesthetic-allergy-history")
        ]
        return found

    # -- observations -----------------------------------------------------------------

    @cached_property
    def pain_scores(self) -> list[PainScore]:
        return pain_scores(self.record.observations, self.terminology["pain-scores"])

    def latest_observation(self, value_set_id: str, window_days: int) -> tuple[Any, When] | None:
        """The latest final observation of a value set dated within the window."""
        value_set = self.terminology[value_set_id]
        latest: tuple[Any, When] | None = None
        for observation in self.record.observations:
            if observation.status not in PAIN_SCORE_STATUSES:
                continue
            if not in_value_set(observation.code, value_set):
                continue
            start = observation.effectivePeriod.start if observation.effectivePeriod else None
            when = first_when(observation.effectiveDateTime, start, observation.effectiveInstant)
            if when is None or not when.precise or not within(when.day, self.today, window_days):
                continue
            if latest is None or when.instant > latest[1].instant:
                latest = (observation, when)
        return latest

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
        return LabValue(value, when.day, f"{value.normalize():f} %")

    @cached_property
    def pregnancy(self) -> list[Evidence]:
        found = self.conditions_in("pregnancy")
        latest = self.latest_observation("pregnancy-status", self.policy.pregnancy_window_days)
        if latest is not None:
            observation, when = latest
            if in_value_set(observation.valueCodeableConcept, self.terminology["pregnancy"]):
                found.append(Evidence("pregnancy status: currently pregnant", when.day))
        return found

    # -- sessions ---------------------------------------------------------------------

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

    # -- physical therapy and referrals ----------------------------------------------

    @cached_property
    def physical_therapy(self) -> list[Evidence]:
        """Physical therapy in place, as the P1 rule defines it."""
        pt = self.terminology["physical-therapy"]
        days = self.policy.pt_lookback_days
        found = []
        for procedure in self.record.procedures:
            if procedure.status == "completed" and in_value_set(procedure.code, pt):
                start = procedure.performedPeriod.start if procedure.performedPeriod else None
                when = first_when(procedure.performedDateTime, start, today=self.today)
                if when and within(when.day, self.today, days):
                    found.append(Evidence(f"PT procedure {label(procedure.code, pt)}", when.day))
        for request in self.record.service_requests:
            if not (in_value_set(request.code, pt) or in_value_set(request.category, pt)):
                continue
            if request.status in ("active", "draft", "on-hold"):
                authored = first_when(request.authoredOn, today=self.today)
                found.append(
                    Evidence(
                        f"PT referral {label(request.code, pt)} ({request.status})",
                        authored.day if authored else None,
                    )
                )
            elif request.status == "completed":
                when = first_when(
                    request.authoredOn,
                    request.occurrenceDateTime,
                    request.occurrencePeriod.start if request.occurrencePeriod else None,
                    today=self.today,
                )
                if when and within(when.day, self.today, days):
                    found.append(
                        Evidence(f"PT referral {label(request.code, pt)} (completed)", when.day)
                    )
        for plan in self.record.care_plans:
            if plan.status != "active":
                continue
            concepts = list(plan.category or []) + [
                a.detail.code for a in plan.activity or [] if a.detail and a.detail.code
            ]
            match = next((c for c in concepts if in_value_set(c, pt)), None)
            if match is not None:
                start = plan.period.start if plan.period else None
                when = first_when(start, plan.created, today=self.today)
                found.append(
                    Evidence(f"active care plan: {label(match, pt)}", when.day if when else None)
                )
        for request in self.orders.drafts.service_requests:
            if in_value_set(request.code, pt) or in_value_set(request.category, pt):
                found.append(Evidence(f"PT order in this order set: {label(request.code, pt)}"))
        return found

    def referral_in_place(self, category: str) -> Evidence | None:
        """An active or last-year referral of that specialty, or one among the draft orders."""
        value_set: ValueSet = self.terminology[REFERRAL_VALUE_SETS[category]]
        for request in self.orders.drafts.service_requests:
            if in_value_set(request.code, value_set):
                return Evidence(f"{label(request.code, value_set)} in this order set")
        for request in self.record.service_requests:
            if request.status in INACTIVE_REQUEST_STATUSES or not in_value_set(
                request.code, value_set
            ):
                continue
            authored = first_when(request.authoredOn, today=self.today)
            recent = authored is not None and within(
                authored.day, self.today, self.policy.referral_lookback_days
            )
            if request.status in ("active", "draft", "on-hold") or recent:
                return Evidence(
                    f"{label(request.code, value_set)} ({request.status})",
                    authored.day if authored else None,
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

    def order_site_text(self) -> str:
        sites = [s[2] for order in self.orders.tpi_orders for s in order.body_sites]
        return ", ".join(dict.fromkeys(sites))
