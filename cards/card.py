"""Findings and the CDS Hooks 2.0 cards made of them: one card per topic at most.

A finding is what one rule found, with its evidence already in words; a card gathers the
findings of a topic, names the most important one in its summary and lists them all in its
detail. No optional field is ever null or empty.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

TOPIC_SYSTEM = "urn:tpi-cds:topic"
OVERRIDE_SYSTEM = "urn:tpi-cds:override"
SOURCE_LABEL = "TPI decision support (tpi-cds)"
SUMMARY_LIMIT = 139

TOPICS = {
    "tpi-safety": "TPI safety",
    "tpi-eligibility": "TPI eligibility",
    "pt-integration": "Physical therapy with TPI",
    "specialist-referral": "Specialist referral",
}
TOPIC_INDEX = {topic: index for index, topic in enumerate(TOPICS, start=1)}
UUID_MARK = 0xC5

RULES_EXTENSION = "tpi-rules"
SNOOZE_REASONS = (
    ("snooze-30", "Remind me in 30 days"),
    ("snooze-90", "Remind me in 90 days"),
)
SNOOZE_DAYS = {code: int(code.removeprefix("snooze-")) for code, _ in SNOOZE_REASONS}
SNOOZABLE_TOPICS = ("pt-integration", "specialist-referral")


def snooze_group(rule: str) -> str:
    """What a snooze is keyed by: the rule id, except that P1 (order time) and P2 (chart
    opening) are one finding, "no therapy in place", for snoozing (section 3.5)."""
    return "P" if rule in ("P1", "P2") else rule


def is_snoozed(rule: str, snoozed: frozenset[str]) -> bool:
    return snooze_group(rule) in snoozed


# Per topic, only reasons that make sense there (section 4); snoozes on PT and referral.
OVERRIDE_REASONS: dict[str, tuple[tuple[str, str], ...]] = {
    "tpi-safety": (
        ("benefit-outweighs-risk", "Benefit outweighs risk"),
        ("already-addressed", "Already addressed"),
        ("information-inaccurate", "Information not accurate"),
    ),
    "tpi-eligibility": (
        ("payer-exception", "Payer exception / prior authorization"),
        ("documented-elsewhere", "Documented elsewhere"),
        ("clinical-judgment", "Clinical judgment"),
    ),
    "pt-integration": (
        ("patient-declined", "Patient declined"),
        ("addressed-elsewhere", "Already addressed elsewhere"),
        ("clinical-judgment", "Clinical judgment"),
        *SNOOZE_REASONS,
    ),
    "specialist-referral": (
        ("patient-declined", "Patient declined"),
        ("addressed-elsewhere", "Already addressed elsewhere"),
        ("clinical-judgment", "Clinical judgment"),
        *SNOOZE_REASONS,
    ),
}


class Indicator(IntEnum):
    INFO = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def code(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Link:
    label: str
    url: str


class Sources:
    """The public sources the cards rest on (clinical rules page, section 6)."""

    LCD = Link(
        "Medicare LCD L39671: Trigger Point Injections (2024)",
        "https://www.cms.gov/medicare-coverage-database/view/lcd.aspx?lcdid=39671",
    )
    BCBSA = Link(
        "BCBSA policy 2.01.103: Trigger Point and Tender Point Injections",
        "https://www.evidencepositioningsystem.com/_w_/BCBSA/policies/2.01.103",
    )
    AETNA = Link(
        "Aetna CPB 0016: Back Pain - Invasive Procedures",
        "https://www.aetna.com/cpb/medical/data/1_99/0016.html",
    )
    AFP_2023 = Link(
        "Trigger Point Management, Am Fam Physician 2023;107(2):159-164",
        "https://www.aafp.org/pubs/afp/issues/2023/0200/trigger-point-management.html",
    )
    AFP_2002 = Link(
        "Trigger Point Injections, Am Fam Physician 2002;65(4):653-660",
        "https://www.aafp.org/pubs/afp/issues/2002/0215/p653.html",
    )
    FARRAR = Link(
        "Farrar et al., Pain 2001: clinically important change on the 0-10 pain scale",
        "https://pubmed.ncbi.nlm.nih.gov/11690728/",
    )
    SCOTT = Link(
        "Scott et al., Pain Med 2009: no injectate better than another for TPI",
        "https://pubmed.ncbi.nlm.nih.gov/18992040/",
    )
    ASRA = Link(
        "Narouze et al., ASRA/ESRA/AAPM/INS/NANS/WIP guideline on antithrombotics in pain "
        "procedures, Reg Anesth Pain Med 2018",
        "https://rapm.bmj.com/content/43/3/225",
    )
    WOLFE = Link(
        "Wolfe et al., 2016 revisions to the fibromyalgia diagnostic criteria",
        "https://pubmed.ncbi.nlm.nih.gov/27916278/",
    )


@dataclass(frozen=True)
class Finding:
    """What one rule found: its severity, a candidate summary, and the evidence in words."""

    rule: str
    indicator: Indicator
    title: str
    summary: str
    detail: str
    links: tuple[Link, ...] = ()


@dataclass(frozen=True)
class Suggestion:
    label: str
    actions: tuple[dict[str, Any], ...]
    recommended: bool = False


@dataclass
class TopicAdvice:
    """A topic's findings and suggestions, ready to become one card."""

    topic: str
    findings: list[Finding] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    footer: str = ""
    summary: str | None = None

    @property
    def selection_behavior(self) -> str:
        """``any`` when a safety card carries several suggestions (remove the TPI and the
        steroid); ``at-most-one`` otherwise, alternatives such as specialties included."""
        if self.topic == "tpi-safety" and len(self.suggestions) > 1:
            return "any"
        return "at-most-one"

    @property
    def indicator(self) -> Indicator | None:
        return max((f.indicator for f in self.findings), default=None)

    def add(self, finding: Finding | None) -> None:
        if finding is not None:
            self.findings.append(finding)

    def ordered(self) -> list[Finding]:
        """Most severe first; among equals, in the order the rules were asked."""
        return sorted(self.findings, key=lambda f: -f.indicator)


@dataclass(frozen=True)
class AdvisedCard:
    """A card with what card memory needs: its topic, rule ids and an evidence fingerprint.

    The fingerprint is a hash of the evidence the card shows (its detail), so the same
    findings on the same evidence give the same key at order-select and order-sign.
    """

    card: dict[str, Any]
    topic: str
    rules: tuple[str, ...]
    fingerprint: str

    @property
    def indicator(self) -> str:
        return self.card["indicator"]


def build_card(advice: TopicAdvice) -> AdvisedCard | None:
    if not advice.findings:
        return None
    findings = advice.ordered()
    indicator = findings[0].indicator
    summary = advice.summary or findings[0].summary
    if len(findings) == 1:
        lines = [f"**{findings[0].title}**: {findings[0].detail}"]
    else:
        lines = [f"- **{f.title}**: {f.detail}" for f in findings]
    if advice.footer:
        lines += ["", advice.footer]
    links: dict[str, Link] = {}
    for finding in findings:
        for link in finding.links:
            links.setdefault(link.url, link)
    card: dict[str, Any] = {
        "uuid": card_uuid(advice.topic),
        "summary": shorten(summary),
        "detail": "\n".join(lines),
        "indicator": indicator.code,
        "source": {
            "label": SOURCE_LABEL,
            "url": links[next(iter(links))].url if links else Sources.AFP_2023.url,
            "topic": {
                "system": TOPIC_SYSTEM,
                "code": advice.topic,
                "display": TOPICS[advice.topic],
            },
        },
        "overrideReasons": [
            {"system": OVERRIDE_SYSTEM, "code": code, "display": display}
            for code, display in OVERRIDE_REASONS[advice.topic]
        ],
        "links": [
            {"label": link.label, "url": link.url, "type": "absolute"} for link in links.values()
        ],
    }
    rules = tuple(sorted({f.rule for f in findings}))
    card["extension"] = {RULES_EXTENSION: list(rules)}
    if advice.suggestions:
        card["suggestions"] = [suggestion_json(s, advice.topic) for s in advice.suggestions]
        card["selectionBehavior"] = advice.selection_behavior
    evidence = "\n".join([advice.topic, *rules, card["detail"]])
    fingerprint = hashlib.sha256(evidence.encode()).hexdigest()[:32]
    return AdvisedCard(card, advice.topic, rules, fingerprint)


def card_uuid(topic: str) -> str:
    """A random RFC 9562 version-8 UUID that also carries the card's topic.

    Feedback names only a card's uuid; reading the topic back from it lets feedback be
    counted per topic without storing every card the service ever sent.
    Layout: ``xxxxxxxx-xxxx-8c5T-yxxx-xxxxxxxxxxxx`` with T the topic's index.
    """
    raw = bytearray(uuid.uuid4().bytes)
    field = (0x8 << 12) | (UUID_MARK << 4) | TOPIC_INDEX[topic]
    raw[6], raw[7] = field >> 8, field & 0xFF
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def topic_of_uuid(value: str) -> str | None:
    """The topic a card (or suggestion) uuid of ours carries, or None."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None
    field = parsed.bytes[6] << 8 | parsed.bytes[7]
    if field >> 12 != 0x8 or (field >> 4) & 0xFF != UUID_MARK:
        return None
    index = field & 0xF
    return next((t for t, i in TOPIC_INDEX.items() if i == index), None)


def suggestion_json(suggestion: Suggestion, topic: str) -> dict[str, Any]:
    return {
        "label": suggestion.label,
        "uuid": card_uuid(topic),
        "isRecommended": suggestion.recommended,
        "actions": list(suggestion.actions),
    }


def shorten(text: str) -> str:
    """Summaries must stay under 140 characters: cut at a word and mark the cut."""
    if len(text) <= SUMMARY_LIMIT:
        return text
    cut = text[: SUMMARY_LIMIT - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def join_evidence(items: Sequence[object]) -> str:
    return "; ".join(str(i) for i in items)
