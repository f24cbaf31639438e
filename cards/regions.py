"""Body regions: where a TPI, a session or an infection is, from the ``body-regions`` set.

A place is a region and a side. An unsided place matches either side of its region (it may
be the same place); a site the value set does not list has an unknown region, and so does a
list of sites with any unknown one among them (section 1, "Body region").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cards.terminology import ValueSet

REGION_NAMES = {
    "head": "head",
    "jaw": "jaw",
    "neck": "neck",
    "shoulder-girdle": "shoulder girdle",
    "upper-back": "upper back",
    "chest-wall": "chest wall",
    "abdomen": "abdomen",
    "lower-back": "lower back",
    "buttock-hip": "buttock / hip",
    "upper-limb": "upper limb",
    "lower-limb": "lower limb",
}
# The 2016 ACR "generalized pain" regions: axial, or an upper / lower level with a side.
ACR_LEVEL = {
    "neck": "axial",
    "upper-back": "axial",
    "lower-back": "axial",
    "shoulder-girdle": "upper",
    "upper-limb": "upper",
    "buttock-hip": "lower",
    "lower-limb": "lower",
}
HEAD_AND_NECK = frozenset({"head", "jaw", "neck", "shoulder-girdle"})


@dataclass(frozen=True)
class Place:
    region: str
    side: str | None = None

    def matches(self, other: Place) -> bool:
        if self.region != other.region:
            return False
        return self.side is None or other.side is None or self.side == other.side

    def __str__(self) -> str:
        name = REGION_NAMES.get(self.region, self.region)
        return f"{self.side} {name}" if self.side else name


Coding = tuple[str | None, str | None]


def place_of(codings: Iterable[Coding], regions: ValueSet) -> Place | None:
    """The place one concept names: its first coding the value set lists."""
    for system, code in codings:
        found = regions.site(system, code)
        if found is not None:
            return Place(found[0], found[1])
    return None


def places_of(concepts: Sequence[Sequence[Coding]], regions: ValueSet) -> tuple[Place, ...] | None:
    """The places of several sites; None (unknown) when there are none or any is unknown."""
    if not concepts:
        return None
    places = []
    for concept in concepts:
        place = place_of(concept, regions)
        if place is None:
            return None
        places.append(place)
    return tuple(dict.fromkeys(places))


def any_match(ours: Iterable[Place], theirs: Iterable[Place]) -> bool:
    theirs = tuple(theirs)
    return any(a.matches(b) for a in ours for b in theirs)


def acr_regions(places: Iterable[Place]) -> set[str]:
    """The ACR regions a set of places covers (left upper, right upper, left lower, right
    lower, axial). An unsided place of a sided level counts as one region of its level only
    when neither side of that level is counted already."""
    places = list(places)
    counted: set[str] = set()
    for place in places:
        level = ACR_LEVEL.get(place.region)
        if level == "axial":
            counted.add("axial")
        elif level and place.side in ("left", "right"):
            counted.add(f"{place.side} {level}")
    for place in places:
        level = ACR_LEVEL.get(place.region)
        unsided = level in ("upper", "lower") and place.side not in ("left", "right")
        if unsided and not any(r.endswith(f" {level}") for r in counted):
            counted.add(f"{level} (side not recorded)")
    return counted
