"""The engine: value sets and a policy, loaded once; advice per request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from cards.card import TopicAdvice, build_card
from cards.eligibility import eligibility_advice
from cards.facts import Facts
from cards.orders import OrderContext, TpiOrder, find_tpi_orders
from cards.physical_therapy import pt_advice
from cards.policy import PolicyProfile
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

    def __init__(self, terminology: Terminology, policy: PolicyProfile) -> None:
        self.terminology = terminology
        self.policy = policy

    def tpi_orders(self, hook: str, context: dict[str, Any]) -> list[TpiOrder]:
        return find_tpi_orders(hook, context, self.terminology)

    def record(self, patient_id: str, resources: Any) -> PatientRecord:
        return PatientRecord.from_resources(patient_id, resources, self.terminology)

    def advise(
        self, record: PatientRecord, orders: OrderContext, today: date
    ) -> list[dict[str, Any]]:
        """At most one card per topic; no card at all on an order hook without a TPI order."""
        if orders.is_order_hook and not orders.tpi_orders:
            return []
        facts = Facts(record, orders, self.terminology, self.policy, today)
        topics = ORDER_TOPICS if orders.is_order_hook else PATIENT_VIEW_TOPICS
        cards = []
        for topic in topics:
            card = build_card(topic(facts))
            if card is not None:
                cards.append(card)
        return cards
