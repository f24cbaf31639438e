"""The clinical engine: FHIR R4 data and an order in, TPI advice cards out.

Knows nothing of HTTP, JWTs or databases; usable from a notebook with FHIR JSON alone.
"""

from cards.card import AdvisedCard
from cards.engine import Engine
from cards.orders import OrderContext, TpiOrder, parse_draft_orders
from cards.policy import PROFILES, Policies, PolicyError, PolicyProfile, policies_for, policy_for
from cards.record import PatientRecord, resources_in
from cards.terminology import Terminology, TerminologyError

__all__ = [
    "PROFILES",
    "AdvisedCard",
    "Engine",
    "OrderContext",
    "PatientRecord",
    "Policies",
    "PolicyError",
    "PolicyProfile",
    "Terminology",
    "TerminologyError",
    "TpiOrder",
    "parse_draft_orders",
    "policies_for",
    "policy_for",
    "resources_in",
]
