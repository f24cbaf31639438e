"""Value sets: the project's own FHIR ValueSets, and a site's folder adding or replacing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.valueset import ValueSet as ValueSetModel

from cards import Terminology, TerminologyError
from cards.terminology import BUILTIN_DIR, CPT, ICD10CM, RXNORM


def test_every_builtin_file_is_a_valid_fhir_valueset_with_an_expansion():
    files = sorted(BUILTIN_DIR.glob("*.json"))
    assert len(files) >= 20
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        ValueSetModel.model_validate(doc)
        assert doc["expansion"]["contains"], path.name
        assert "Sources:" in doc["description"], path.name


def test_icd_families_follow_the_rules_page():
    vs = Terminology.load()
    infection = vs["active-infection"]
    assert infection.contains(ICD10CM, "L03.115")  # cellulitis of right lower limb
    assert infection.contains(ICD10CM, "A41.9")  # sepsis, unspecified
    assert not infection.contains(ICD10CM, "L02.416")  # abscess is not in the family
    bleeding = vs["bleeding-disorders"]
    assert bleeding.contains(ICD10CM, "D66")
    assert bleeding.contains(ICD10CM, "D68.0")
    assert not bleeding.contains(ICD10CM, "D68.51")  # factor V Leiden: a clotting tendency
    assert not bleeding.contains(ICD10CM, "D68.62")


def test_aspirin_alone_is_not_an_anticoagulant_but_clopidogrel_with_aspirin_is():
    anticoagulants = Terminology.load()["anticoagulants"]
    assert anticoagulants.contains(RXNORM, "1364445")  # apixaban 5 MG Oral Tablet
    assert anticoagulants.name_in("Aspirin 81 MG Oral Tablet") is None
    assert anticoagulants.name_in("Plavix (clopidogrel) 75 mg") == "clopidogrel"


def site_folder(tmp_path: Path, *documents: dict) -> Path:
    for index, doc in enumerate(documents):
        (tmp_path / f"site-{index}.json").write_text(json.dumps(doc), encoding="utf-8")
    return tmp_path


def test_a_site_extends_tpi_codes_by_including_ours(tmp_path):
    local = {
        "resourceType": "ValueSet",
        "id": "tpi-procedures",
        "status": "active",
        "compose": {
            "include": [
                {"valueSet": ["urn:tpi-cds:valueset:tpi-procedures"]},
                {"system": "urn:oid:1.2.3.4.5", "concept": [{"code": "TPI-LOCAL-7"}]},
            ]
        },
    }
    vs = Terminology.load(site_folder(tmp_path, local))["tpi-procedures"]
    assert vs.contains("urn:oid:1.2.3.4.5", "TPI-LOCAL-7")
    assert vs.contains(CPT, "20552")


def test_a_site_replaces_a_value_set_with_its_own_expansion(tmp_path):
    vsac = {
        "resourceType": "ValueSet",
        "id": "site-anticoagulants",
        "url": "urn:tpi-cds:valueset:anticoagulants",
        "status": "active",
        "expansion": {
            "timestamp": "2026-11-01T00:00:00Z",
            "contains": [{"system": RXNORM, "code": "999999", "display": "Local anticoagulant"}],
        },
    }
    vs = Terminology.load(site_folder(tmp_path, vsac))["anticoagulants"]
    assert vs.contains(RXNORM, "999999")
    assert not vs.contains(RXNORM, "1364445")


def test_a_broken_site_file_is_refused_at_load_with_its_name(tmp_path):
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TerminologyError, match=r"broken\.json"):
        Terminology.load(tmp_path)
    (tmp_path / "broken.json").write_text('{"resourceType": "ValueSet", "status": 7}')
    with pytest.raises(TerminologyError, match=r"broken\.json"):
        Terminology.load(tmp_path)


def test_a_missing_site_folder_is_refused(tmp_path):
    with pytest.raises(TerminologyError, match="does not exist"):
        Terminology.load(tmp_path / "nowhere")
