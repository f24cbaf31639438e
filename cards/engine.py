"""The engine: value sets and policies, loaded once; advice per request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from cards.card import AdvisedCard, Indicator, TopicAdvice, build_card
from cards.eligibility import eligibility_advice
from cards.facts import Facts
from cards.orders import OrderContext, TpiOrder, find_tpi_orders
from cards.physical_therapy import pt_advice
from cards.policy import Policies, PolicyProfile
from cards.record import PatientRecord
from cards.referral import referral_advice
from cards.safety import safety_advice
from cards.terminology import Terminology

ORDER_TOPICS: tuple[Callable[[Facts], TopicAdvice], ...] = (
    safety_advice,
    eligibility_advice,
    pt_advice,
    referral_advice,
)
PATIENT_VIEW_TOPICS: tuple[Callable[[Facts], TopicAdvice], ...] = (pt_advice, referral_advice)


class Engine:
    """Pure advice: FHIR data and an order context in, CDS Hooks cards out."""

    def __init__(self, terminology: Terminology, policies: Policies) -> None:
        self.terminology = terminology
        self.policies = policies

    @property
    def policy(self) -> PolicyProfile:
        """The site's default profile (used when the patient's coverage decides nothing)."""
        return self.policies.default_profile

    def tpi_orders(self, hook: str, context: dict[str, Any]) -> list[TpiOrder]:
        return find_tpi_orders(hook, context, self.terminology)

    def record(self, patient_id: str, resources: Any) -> PatientRecord:
        return PatientRecord.from_resources(patient_id, resources, self.terminology)

    def advise(
        self, record: PatientRecord, orders: OrderContext, today: date
    ) -> list[dict[str, Any]]:
        """At most one card per topic; no card at all on an order hook without a TPI order."""
        return [advised.card for advised in self.advise_keyed(record, orders, today)]

    def advise_keyed(
        self,
        record: PatientRecord,
        orders: OrderContext,
        today: date,
        snoozed: frozenset[str] = frozenset(),
    ) -> list[AdvisedCard]:
        """The cards with their memory keys (topic, rule ids, evidence fingerprint)."""
        return self.advisor(record, orders, today).cards(snoozed)

    def advisor(self, record: PatientRecord, orders: OrderContext, today: date) -> Advisor:
        """One patient's advice, asked more than once (card memory re-asks with snoozes)."""
        return Advisor(Facts(record, orders, self.terminology, self.policies, today))


class Advisor:
    """The facts of one request, computed once, and the cards they give."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts

    def cards(self, snoozed: frozenset[str] = frozenset()) -> list[AdvisedCard]:
        """At most one card per topic, leaving out snoozed findings (by ``snooze_group``).

        Precedence: a critical infection card (do not inject) is sent alone — the other
        topics are moot while the injection should not happen. A critical allergy card hides
        nothing: the injection goes ahead with another injectate.
        """
        facts = self.facts
        if facts.orders.is_order_hook and not facts.orders.tpi_orders:
            return []
        facts.snoozed = snoozed
        topics = ORDER_TOPICS if facts.orders.is_order_hook else PATIENT_VIEW_TOPICS
        cards: list[AdvisedCard] = []
        for topic in topics:
            advice = topic(facts)
            if advice.topic == "tpi-safety" and _do_not_inject(advice):
                card = build_card(advice)
                return [card] if card is not None else []
            card = build_card(advice)
            if card is not None:
                cards.append(card)
        return cards

    def evidence_since(self, instant: datetime) -> bool:
        """A TPI session or pain score after ``instant``: new evidence lifts a snooze.

        An untimed session or score counts from the day after ``instant``'s day.
        """
        instant = instant if instant.tzinfo else instant.replace(tzinfo=UTC)
        day = instant.astimezone(UTC).date()
        for session in self.facts.sessions:
            if session.day > day or (session.started is not None and session.started > instant):
                return True
        return any(
            (score.instant > instant) if score.timed else (score.day > day)
            for score in self.facts.pain_scores
        )


def _do_not_inject(advice: TopicAdvice) -> bool:
    return any(f.rule == "S1" and f.indicator is Indicator.CRITICAL for f in advice.findings)
