"""The card gallery: the engine run over built-in example requests that fire every rule.

The examples are copies of test vignettes packaged with the wheel (the report must work
from an installed package). They were chosen as the fewest vignettes that together fire
every rule id under both payer profiles as the site default, so a site that defaults to
``commercial`` still sees every rule. They are written for 2026-11-23 and judged by that
day. E0 ("criteria met") is off by default; one example turns it on for itself only, so
the committee sees the card it would switch on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from typing import Any

from cards import Engine, resources_in
from cards.payer import PayerProfile, payer_profile
from cards.policy import PROFILES, PolicyProfile
from cds_service.evaluation import evaluate_request, parse_request
from cds_service.report.catalogue import RULES, RULES_BY_ID
from cds_service.settings import EngineSettings

EXAMPLES_TODAY = date(2026, 11, 23)


class GalleryError(RuntimeError):
    """The examples do not show every rule of the catalogue: the report would mislead."""


@dataclass(frozen=True)
class Example:
    """A built-in example request: its file, what it shows, and overrides of its own."""

    name: str
    title: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


EXAMPLES: tuple[Example, ...] = (
    Example(
        "safety-s1-s3-cellulitis-on-apixaban",
        "Cellulitis at the injection site in a patient on apixaban: do not inject",
    ),
    Example(
        "safety-s2-xylocaine-anaphylaxis-free-text",
        "Anaphylaxis to Xylocaine recorded as free text",
    ),
    Example(
        "safety-s6-steroid-pregnant",
        "Triamcinolone ordered with the TPI for a pregnant patient",
    ),
    Example(
        "pt-p1-repeat-tpi-no-therapy",
        "A repeat TPI over the upper trapezius with no therapy in place "
        "(criteria-met cards turned on for this example)",
        {"show_criteria_met": True},
    ),
    Example(
        "never-everything-but-infection-or-allergy",
        "Many findings at once: bleeding risk, steroid with diabetes, no supporting "
        "diagnosis, session cap, failed injections, radiculopathy",
    ),
    Example(
        "eligibility-payer-e3-medicare-coverage",
        "Three sessions in 12 months for a patient with Medicare coverage",
    ),
    Example(
        "eligibility-e4-same-site-20-days-ago",
        "A TPI at the same site 20 days ago",
    ),
    Example(
        "never-unknown-response-no-followup",
        "Response to the last session unknown: no follow-up pain score",
    ),
    Example(
        "eligibility-e7-ultrasound-guidance-ordered",
        "Ultrasound guidance ordered with the TPI (order-sign)",
    ),
    Example(
        "referral-r4-tension-headache-failed-tpis",
        "Tension-type headache and failed neck TPIs",
    ),
    Example(
        "referral-pv-fibromyalgia-recent-tpi",
        "Patient view: fibromyalgia and a TPI last month, no therapy",
    ),
)


@dataclass(frozen=True)
class Threshold:
    """One profile setting a card's rules read, as in force for that card."""

    name: str
    value: Any
    packaged: Any
    # The site's value when this example overrides it for itself (E0's switch), else None.
    site: Any = None

    @property
    def overridden(self) -> bool:
        return self.value != self.packaged

    @property
    def example_only(self) -> bool:
        return self.site is not None


@dataclass(frozen=True)
class GalleryCard:
    card: dict[str, Any]
    rules: tuple[str, ...]
    thresholds: tuple[Threshold, ...]

    @property
    def topic(self) -> str:
        return self.card["source"]["topic"]["code"]


@dataclass(frozen=True)
class GalleryExample:
    example: Example
    hook: str
    profile: str
    profile_label: str
    example_overrides: Mapping[str, Any]
    cards: tuple[GalleryCard, ...]


def load_example(name: str) -> dict[str, Any]:
    """A packaged example request (works from an installed wheel, not only a checkout)."""
    path = resources.files("cds_service.report").joinpath("examples", f"{name}.json")
    return json.loads(path.read_text(encoding="utf-8"))


def build_gallery(settings: EngineSettings) -> list[GalleryExample]:
    """Every example's cards under the site's settings; fails if a rule never fires."""
    site_engine = settings.build_engine()
    gallery = []
    for example in EXAMPLES:
        engine = site_engine
        if example.overrides:
            engine = dataclasses.replace(
                settings, policy_overrides={**settings.policy_overrides, **example.overrides}
            ).build_engine()
        gallery.append(run_example(example, engine, site_engine))
    fired = {rule for shown in gallery for card in shown.cards for rule in card.rules}
    unknown = sorted(fired - set(RULES_BY_ID))
    if unknown:
        raise GalleryError(
            f"the engine emits {', '.join(unknown)}, which the rule catalogue does not list"
        )
    missing = [rule.id for rule in RULES if rule.id not in fired]
    if missing:
        raise GalleryError(
            f"no example fires {', '.join(missing)} under this configuration (default profile "
            f"{settings.profile}, policy overrides {dict(settings.policy_overrides) or 'none'}, "
            f"value sets {settings.valueset_dir or 'packaged'}): the gallery would not show "
            "every rule; check the site's policy overrides and value sets"
        )
    return gallery


def run_example(example: Example, engine: Engine, site_engine: Engine) -> GalleryExample:
    """One example's cards, each with the thresholds its rules read as in force for it."""
    body = load_example(example.name)
    response = evaluate_request(body, today=EXAMPLES_TODAY, engine=engine)
    payer = _payer(body, engine)
    site_policy = site_engine.policies[payer.policy.name]
    cards = []
    for card in response["cards"]:
        rules = tuple(card.get("extension", {}).get("tpi-rules", []))
        thresholds = _thresholds(rules, payer.policy, site_policy, set(example.overrides))
        cards.append(GalleryCard(card, rules, thresholds))
    return GalleryExample(
        example=example,
        hook=body["hook"],
        profile=payer.policy.name,
        profile_label=payer.label,
        example_overrides=dict(example.overrides),
        cards=tuple(cards),
    )


def _payer(body: dict[str, Any], engine: Engine) -> PayerProfile:
    """The profile in force for the example's patient, as its cards apply it."""
    request = parse_request(body)
    found = [r for value in request.prefetch.values() for r in resources_in(value)]
    record = engine.record(request.patient_id, found)
    return payer_profile(record.coverages, engine.policies, engine.terminology, EXAMPLES_TODAY)


def _thresholds(
    rules: tuple[str, ...], policy: PolicyProfile, site: PolicyProfile, example_only: set[str]
) -> tuple[Threshold, ...]:
    """The settings the rules read: in force, packaged, and the site's value when the
    example overrides it for itself."""
    names = dict.fromkeys(
        name for rule in rules if rule in RULES_BY_ID for name in RULES_BY_ID[rule].thresholds
    )
    packaged = PROFILES[policy.name]
    return tuple(
        Threshold(
            name,
            getattr(policy, name),
            getattr(packaged, name),
            getattr(site, name) if name in example_only else None,
        )
        for name in names
    )
