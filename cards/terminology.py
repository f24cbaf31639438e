"""Value sets: the one place that answers "is this code in value set X?".

Code lists are data: FHIR R4 ValueSet resources in ``cards/valuesets/``. Membership is
the expansion's ``contains`` plus, for ICD-10-CM, ``compose`` filters with ``is-a`` (the
code family named by the clinical rules). A site can add or replace value sets with a
folder of its own ValueSet JSON (for example VSAC expansions); a site ValueSet whose
``compose.include`` names one of ours by ``valueSet`` canonical extends it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
TEXT_MATCH_EXTENSION = "urn:tpi-cds:extension:text-match"
BRAND_EXTENSION = "urn:tpi-cds:extension:brand"
CLASS_NAME_EXTENSION = "urn:tpi-cds:extension:class-name"
ROLE_EXTENSION = "urn:tpi-cds:extension:role"
REGION_EXTENSION = "urn:tpi-cds:extension:region"
LATERALITY_EXTENSION = "urn:tpi-cds:extension:laterality"
CLASS_AGENT = "class"
BUILTIN_DIR = Path(__file__).parent / "valuesets"
# Read through importlib.resources: the package may be imported from a zip (a wheel on
# spark-submit's --py-files), where no folder exists to glob.
BUILTIN_PACKAGE = "cards.valuesets"
BUILTIN_PREFIX = "builtin:"

# EHRs send OIDs as often as URLs; both name the same code system.
SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "http://snomed.info/sct/": SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "http://www.nlm.nih.gov/research/umls/rxnorm/": RXNORM,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "http://www.ama-assn.org/go/cpt/": CPT,
}


class TerminologyError(ValueError):
    """A value set file cannot be used; raised at load time, never per request."""


def normalize_system(system: str | None) -> str:
    if not system or not isinstance(system, str):
        return ""
    system = system.strip()
    return SYSTEM_ALIASES.get(system, system)


def normalize_code(system: str, code: str | None) -> str:
    """ICD-10-CM codes arrive as ``m7912`` or ``M79.12``; both mean M79.12."""
    if not code or not isinstance(code, str):
        return ""
    code = code.strip()
    if system == ICD10CM:
        code = code.upper()
        if "." not in code and len(code) > 3:
            code = f"{code[:3]}.{code[3:]}"
    return code


@dataclass(frozen=True)
class Concept:
    system: str
    code: str
    display: str

    def as_coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True)
class ValueSet:
    """A loaded value set: its concepts, is-a families and text fallback names."""

    id: str
    url: str
    title: str
    concepts: tuple[Concept, ...]
    families: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    excluded_families: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    text_names: tuple[str, ...] = ()
    brands: Mapping[str, str] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    roles: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    sites: Mapping[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)
    _index: Mapping[tuple[str, str], int] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        *,
        id: str,
        url: str,
        title: str,
        concepts: Iterable[Concept],
        families: Mapping[str, tuple[str, ...]] | None = None,
        excluded_families: Mapping[str, tuple[str, ...]] | None = None,
        text_names: Iterable[str] = (),
        brands: Mapping[str, str] | None = None,
        class_names: Iterable[str] = (),
        roles: Mapping[tuple[str, str], Iterable[str]] | None = None,
        sites: Mapping[tuple[str, str], tuple[str, str | None]] | None = None,
    ) -> ValueSet:
        unique: dict[tuple[str, str], Concept] = {}
        for concept in concepts:
            unique.setdefault((concept.system, concept.code), concept)
        ordered = tuple(unique.values())
        return cls(
            id=id,
            url=url,
            title=title,
            concepts=ordered,
            families=dict(families or {}),
            excluded_families=dict(excluded_families or {}),
            text_names=tuple(dict.fromkeys(name.lower() for name in text_names)),
            brands={k.lower(): v.lower() for k, v in (brands or {}).items()},
            class_names=tuple(dict.fromkeys(name.lower() for name in class_names)),
            roles={key: frozenset(value) for key, value in (roles or {}).items()},
            sites=dict(sites or {}),
            _index={key: rank for rank, key in enumerate(unique)},
        )

    def contains(self, system: str | None, code: str | None) -> bool:
        system = normalize_system(system)
        code = normalize_code(system, code)
        if not code:
            return False
        if (system, code) in self._index:
            return True
        if system != ICD10CM:
            return False
        if any(code.startswith(root) for root in self.excluded_families.get(system, ())):
            return False
        return any(code.startswith(root) for root in self.families.get(system, ()))

    def rank(self, system: str | None, code: str | None) -> int:
        """Position in the expansion: a lower rank is preferred (e.g. 72514-3 over 38208-5)."""
        system = normalize_system(system)
        return self._index.get((system, normalize_code(system, code)), len(self._index))

    def name_in(self, text: str | None) -> str | None:
        """The first fallback name found in free text (case-insensitive), for local codes."""
        if not text:
            return None
        lowered = text.lower()
        return next((name for name in self.text_names if name in lowered), None)

    def agent_in(self, text: str | None) -> str | None:
        """The agent free text names: an ingredient, a brand's ingredient, or ``class``.

        "Xylocaine" is lidocaine; "amide local anesthetics" names the whole class.
        """
        if not text:
            return None
        lowered = text.lower()
        for name in self.text_names:
            if name in lowered:
                return name
        for brand, ingredient in self.brands.items():
            if brand in lowered:
                return ingredient
        if any(name in lowered for name in self.class_names):
            return CLASS_AGENT
        return None

    def roles_of(self, system: str | None, code: str | None) -> frozenset[str]:
        system = normalize_system(system)
        return self.roles.get((system, normalize_code(system, code)), frozenset())

    def with_role(self, role: str) -> ValueSet:
        """The concepts of one role (e.g. ``exercise`` of ``physical-therapy``) as a set."""
        return ValueSet.build(
            id=f"{self.id}#{role}",
            url=f"{self.url}#{role}",
            title=f"{self.title} ({role})",
            concepts=[c for c in self.concepts if role in self.roles.get((c.system, c.code), ())],
        )

    def site(self, system: str | None, code: str | None) -> tuple[str, str | None] | None:
        """(region, laterality) of a body site or site-specific disorder, when listed."""
        system = normalize_system(system)
        return self.sites.get((system, normalize_code(system, code)))

    @property
    def suggested(self) -> Concept:
        """The concept the service puts into a suggestion: the first of the expansion."""
        if not self.concepts:
            raise TerminologyError(f"value set {self.id} has no concepts to suggest")
        return self.concepts[0]


class Terminology(Mapping[str, ValueSet]):
    """All value sets by id; loaded once per process."""

    def __init__(self, value_sets: Mapping[str, ValueSet]) -> None:
        self._by_id = dict(value_sets)
        self._derived: dict[str, Any] = {}

    def derived(self, key: str, build: Callable[[], T]) -> T:
        """Something built from these value sets once (an index), then reused per request."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def __getitem__(self, key: str) -> ValueSet:
        return self._by_id[key]

    def role(self, value_set_id: str, role: str) -> ValueSet:
        """One role's concepts of a value set, built once."""
        return self.derived(
            f"role:{value_set_id}#{role}", lambda: self[value_set_id].with_role(role)
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    @classmethod
    def load(cls, site_dir: str | Path | None = None) -> Terminology:
        """The built-in value sets, with a site's folder added or replacing by id or url."""
        raw = {doc["id"]: doc for doc in _read_folder(files(BUILTIN_PACKAGE))}
        if not raw:
            raise TerminologyError(
                f"no built-in value sets found in {BUILTIN_PACKAGE}: the package is incomplete"
            )
        if site_dir:
            folder = Path(site_dir)
            if not folder.is_dir():
                raise TerminologyError(f"value set folder {folder} does not exist")
            by_url = {doc.get("url"): vid for vid, doc in raw.items()}
            for doc in _read_folder(folder, validate=True):
                target = by_url.get(doc.get("url")) or doc["id"]
                if target in raw and f"{BUILTIN_PREFIX}{target}" not in raw:
                    # Kept so that the site's ValueSet can include ours by canonical.
                    raw[f"{BUILTIN_PREFIX}{target}"] = raw[target]
                raw[target] = dict(doc, id=target, url=raw.get(target, doc).get("url"))
        resolved: dict[str, ValueSet] = {}
        for vid in raw:
            resolved[vid] = _resolve(vid, raw, resolved, stack=())
        return cls({k: v for k, v in resolved.items() if not k.startswith(BUILTIN_PREFIX)})


def _read_folder(folder: Traversable, *, validate: bool = False) -> list[dict[str, Any]]:
    docs = []
    entries = (item for item in folder.iterdir() if item.name.endswith(".json"))
    for path in sorted(entries, key=lambda item: item.name):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TerminologyError(f"{path.name}: not readable JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("resourceType") != "ValueSet":
            raise TerminologyError(f"{path.name}: not a FHIR ValueSet")
        if validate:
            _validate_value_set(path.name, doc)
        if not doc.get("id"):
            raise TerminologyError(f"{path.name}: a ValueSet needs an id")
        docs.append(doc)
    return docs


def _validate_value_set(name: str, doc: dict[str, Any]) -> None:
    from fhir.resources.R4B.valueset import ValueSet as ValueSetModel
    from pydantic import ValidationError

    try:
        ValueSetModel.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise TerminologyError(f"{name}: invalid ValueSet at {where}: {first['msg']}") from exc


def _resolve(
    vid: str,
    raw: Mapping[str, dict[str, Any]],
    done: dict[str, ValueSet],
    stack: tuple[str, ...],
) -> ValueSet:
    if vid in done:
        return done[vid]
    if vid in stack:
        raise TerminologyError(f"value set {vid} includes itself")
    doc = raw[vid]
    items = list(_walk_contains(doc.get("expansion", {}).get("contains", [])))
    concepts = [_concept(item) for item in items]
    roles: dict[tuple[str, str], set[str]] = {}
    sites: dict[tuple[str, str], tuple[str, str | None]] = {}
    for item, concept in zip(items, concepts, strict=True):
        key = (concept.system, concept.code)
        extensions = [e for e in item.get("extension", []) if isinstance(e, dict)]
        for ext in extensions:
            if ext.get("url") == ROLE_EXTENSION and ext.get("valueCode"):
                roles.setdefault(key, set()).add(ext["valueCode"])
        region = next(
            (e.get("valueCode") for e in extensions if e.get("url") == REGION_EXTENSION), None
        )
        if region:
            side = next(
                (e.get("valueCode") for e in extensions if e.get("url") == LATERALITY_EXTENSION),
                None,
            )
            sites[key] = (region, side)
    brands = {}
    for ext in doc.get("extension", []):
        if ext.get("url") == BRAND_EXTENSION:
            parts = {e.get("url"): e.get("valueString") for e in ext.get("extension", [])}
            if parts.get("name") and parts.get("ingredient"):
                brands[parts["name"]] = parts["ingredient"]
    class_names = [
        ext["valueString"]
        for ext in doc.get("extension", [])
        if ext.get("url") == CLASS_NAME_EXTENSION and ext.get("valueString")
    ]
    families: dict[str, list[str]] = {}
    excluded: dict[str, list[str]] = {}
    text_names = [
        ext["valueString"]
        for ext in doc.get("extension", [])
        if ext.get("url") == TEXT_MATCH_EXTENSION and ext.get("valueString")
    ]
    for include in doc.get("compose", {}).get("include", []):
        for canonical in include.get("valueSet", []):
            url = canonical.split("|")[0]
            target = next(
                (k for k, d in raw.items() if d.get("url") == url and k != vid and k not in stack),
                None,
            )
            if target is None:
                raise TerminologyError(f"value set {vid} includes unknown {canonical}")
            other = _resolve(target, raw, done, (*stack, vid))
            concepts.extend(other.concepts)
            for system, roots in other.families.items():
                families.setdefault(system, []).extend(roots)
            for system, roots in other.excluded_families.items():
                excluded.setdefault(system, []).extend(roots)
            text_names.extend(other.text_names)
            for key, values in other.roles.items():
                roles.setdefault(key, set()).update(values)
            for key, value in other.sites.items():
                sites.setdefault(key, value)
            for name, ingredient in other.brands.items():
                brands.setdefault(name, ingredient)
            class_names.extend(other.class_names)
        _collect_families(include, families)
        for concept in include.get("concept", []):
            system = normalize_system(include.get("system"))
            concepts.append(
                Concept(system, normalize_code(system, concept["code"]), concept.get("display", ""))
            )
    for exclude in doc.get("compose", {}).get("exclude", []):
        _collect_families(exclude, excluded)
    value_set = ValueSet.build(
        id=vid,
        url=doc.get("url") or f"urn:tpi-cds:valueset:{vid}",
        title=doc.get("title") or doc.get("name") or vid,
        concepts=concepts,
        families={k: tuple(v) for k, v in families.items()},
        excluded_families={k: tuple(v) for k, v in excluded.items()},
        text_names=text_names,
        brands=brands,
        class_names=class_names,
        roles=roles,
        sites=sites,
    )
    done[vid] = value_set
    return value_set


def _walk_contains(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        if item.get("code"):
            yield item
        yield from _walk_contains(item.get("contains", []))


def _concept(item: dict[str, Any]) -> Concept:
    system = normalize_system(item.get("system"))
    return Concept(system, normalize_code(system, item["code"]), item.get("display", ""))


def _collect_families(include: dict[str, Any], into: dict[str, list[str]]) -> None:
    system = normalize_system(include.get("system"))
    for rule in include.get("filter", []):
        if system == ICD10CM and rule.get("op") in ("is-a", "descendent-of"):
            into.setdefault(system, []).append(normalize_code(system, rule["value"]))


class CodeIndex:
    """Several value sets as one lookup, for the hot path that reads past most resources.

    The common case (a coding already in canonical form) is one set lookup; only OIDs,
    odd spellings and ICD-10-CM families take the slower normalizing path.
    """

    def __init__(self, value_sets: Iterable[ValueSet]) -> None:
        sets = list(value_sets)
        self._exact = frozenset(
            (concept.system, concept.code) for vs in sets for concept in vs.concepts
        )
        self._sets = sets
        # Canonical systems without families: a miss in the exact set is a definite miss.
        self._plain_systems = frozenset({SNOMED, LOINC, RXNORM, CPT})
        self._icd_families = [
            (vs.families[ICD10CM], vs.excluded_families.get(ICD10CM, ()))
            for vs in sets
            if vs.families.get(ICD10CM)
        ]

    def contains(self, system: Any, code: Any) -> bool:
        try:
            if (system, code) in self._exact:
                return True
        except TypeError:  # an unhashable value where a code should be
            return False
        if system in self._plain_systems or not isinstance(code, str):
            return False
        if not isinstance(system, str | None):
            return False
        canonical = normalize_system(system)
        if canonical != ICD10CM:
            return canonical != system and any(vs.contains(canonical, code) for vs in self._sets)
        code = normalize_code(ICD10CM, code)
        if (ICD10CM, code) in self._exact:
            return True
        return any(
            code.startswith(roots) and not (excluded and code.startswith(excluded))
            for roots, excluded in self._icd_families
        )

    def names_in(self, texts: Iterable[Any]) -> bool:
        """Does any text carry a fallback name of one of the sets (local drug codes)?"""
        names = [
            name for vs in self._sets for name in (*vs.text_names, *vs.brands, *vs.class_names)
        ]
        return any(
            isinstance(text, str) and any(name in text.lower() for name in names) for text in texts
        )
