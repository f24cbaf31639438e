"""CDS Hooks 2.0 feedback: check every entry before storing any of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cards.card import topic_of_uuid
from cds_service.store import FeedbackEntry

OUTCOMES = ("accepted", "overridden")
MAX_ENTRIES = 1000


class InvalidFeedbackError(ValueError):
    """The feedback body breaks the CDS Hooks 2.0 shape (HTTP 400); nothing is stored."""


def parse_feedback(body: Any, service_id: str) -> list[FeedbackEntry]:
    if not isinstance(body, dict):
        raise InvalidFeedbackError("the feedback body must be a JSON object")
    items = body.get("feedback")
    if not isinstance(items, list) or not items:
        raise InvalidFeedbackError("'feedback' is required and must be a non-empty list")
    if len(items) > MAX_ENTRIES:
        raise InvalidFeedbackError(f"at most {MAX_ENTRIES} feedback entries per call")
    return [_entry(item, index, service_id) for index, item in enumerate(items)]


def _entry(item: Any, index: int, service_id: str) -> FeedbackEntry:
    where = f"feedback[{index}]"
    if not isinstance(item, dict):
        raise InvalidFeedbackError(f"{where} must be a JSON object")
    card = item.get("card")
    if not isinstance(card, str) or not card.strip() or len(card) > 64:
        raise InvalidFeedbackError(f"{where}.card is required: the uuid of the card")
    outcome = item.get("outcome")
    if outcome not in OUTCOMES:
        raise InvalidFeedbackError(f"{where}.outcome must be 'accepted' or 'overridden'")
    timestamp = item.get("outcomeTimestamp")
    if not isinstance(timestamp, str) or not _is_instant(timestamp):
        raise InvalidFeedbackError(f"{where}.outcomeTimestamp is required: an ISO 8601 date-time")
    accepted = item.get("acceptedSuggestions")
    override = item.get("overrideReason")
    if outcome == "accepted":
        if not isinstance(accepted, list) or not accepted:
            raise InvalidFeedbackError(
                f"{where}.acceptedSuggestions is required when the outcome is 'accepted'"
            )
        for position, suggestion in enumerate(accepted):
            if not isinstance(suggestion, dict) or not isinstance(suggestion.get("id"), str):
                raise InvalidFeedbackError(
                    f"{where}.acceptedSuggestions[{position}] must be an object with an 'id'"
                )
        if override is not None:
            raise InvalidFeedbackError(f"{where}.overrideReason is only for 'overridden' cards")
        accepted = [{"id": s["id"]} for s in accepted]
    else:
        if accepted is not None:
            raise InvalidFeedbackError(f"{where}.acceptedSuggestions is only for 'accepted' cards")
        if override is not None:
            override = _override_reason(override, where)
    return FeedbackEntry(
        service_id=service_id,
        card_uuid=card,
        card_topic=topic_of_uuid(card),
        outcome=outcome,
        accepted_suggestions=accepted,
        override_reason=override,
        outcome_timestamp=timestamp,
    )


def _override_reason(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidFeedbackError(f"{where}.overrideReason must be a JSON object")
    reason = value.get("reason")
    comment = value.get("userComment")
    cleaned: dict[str, Any] = {}
    if reason is not None:
        if not isinstance(reason, dict) or not isinstance(reason.get("code"), str):
            raise InvalidFeedbackError(
                f"{where}.overrideReason.reason must be a Coding with a code"
            )
        cleaned["reason"] = {
            k: reason[k] for k in ("system", "code", "display") if isinstance(reason.get(k), str)
        }
    if comment is not None:
        if not isinstance(comment, str):
            raise InvalidFeedbackError(f"{where}.overrideReason.userComment must be a string")
        cleaned["userComment"] = comment[:2000]
    return cleaned


def _is_instant(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in text or len(text) == 10
