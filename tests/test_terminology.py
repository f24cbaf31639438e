"""Value sets: the project's own FHIR ValueSets, and a site's folder adding or replacing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.valueset import ValueSet as ValueSetModel

from cards import Terminology, TerminologyError
from cards.terminology import BUILTIN_DIR, CPT, ICD10CM, LOINC, RXNORM, SNOMED

SOPT = "https://nahdo.org/sopt"


def test_every_builtin_file_is_a_valid_fhir_valueset_with_an_expansion():
    files = sorted(BUILTIN_DIR.glob("*.json"))
    assert len(files) >= 20
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        ValueSetModel.model_validate(doc)
        assert doc["expansion"]["contains"], path.name
        assert "Sources:" in doc["description"], path.name


def icd_in(value_set_id: str, *codes: str) -> list[str]:
    """The given ICD-10-CM codes the value set holds, in the given order."""
    vs = Terminology.load()[value_set_id]
    return [code for code in codes if vs.contains(ICD10CM, code)]


def test_infection_families_follow_the_rules_page():
    """S1: skin and soft-tissue infection L01-L03, L08 (abscess L02 included in version 2) and
    SNOMED cellulitis; systemic infection A40-A41 and R65.2x; neither holds the other's."""
    local = ("L01.00", "L02.416", "L03.115", "L03.221", "L08.9")  # impetigo, abscess, ...
    assert icd_in("skin-soft-tissue-infection", *local) == list(local)
    assert Terminology.load()["skin-soft-tissue-infection"].contains(SNOMED, "128045006")
    assert icd_in("skin-soft-tissue-infection", "A41.9", "L05.01") == []  # sepsis, pilonidal
    systemic = ("A40.0", "A41.9", "R65.20", "R65.21")
    assert icd_in("systemic-infection", *systemic) == list(systemic)
    assert icd_in("systemic-infection", "R65.10", "L03.115") == []  # non-infectious SIRS


def test_bleeding_families_follow_the_rules_page():
    """S4: D65-D68 except the thrombophilias D68.5x / D68.6x, D69.1, D69.8, D69.9 (headers
    D65-D68 count, D69 does not); the thrombocytopenias D69.3, D69.4x, D69.5x, D69.6 are
    their own set (info with a stable count); never the purpuras D69.0 / D69.2."""
    bleeding = ("D65", "D66", "D68", "D68.0", "D68.311", "D69.1", "D69.8", "D69.9")
    assert icd_in("bleeding-disorders", *bleeding) == list(bleeding)
    not_bleeding = ("D68.51", "D68.59", "D68.62", "D68.69", "D69", "D69.0", "D69.2")
    assert icd_in("bleeding-disorders", *not_bleeding) == []
    low = ("D69.3", "D69.41", "D69.49", "D69.51", "D69.59", "D69.6")
    assert icd_in("thrombocytopenia", *low) == list(low)
    assert icd_in("thrombocytopenia", "D69.0", "D69.1", "D69.2") == []


def test_anticoagulation_warning_families_follow_the_rules_page():
    """S3: Z79.01 fires, Z79.02 alone does not; severe liver disease K70.3x, K74.6x and kidney
    failure N18.4, N18.5, N18.6, Z99.2 — not stage 3 kidney disease."""
    assert icd_in("long-term-anticoagulant-use", "Z79.01", "Z79.02") == ["Z79.01"]
    organ = ("K70.30", "K70.31", "K74.60", "K74.69", "N18.4", "N18.5", "N18.6", "Z99.2")
    assert icd_in("severe-liver-kidney-disease", *organ) == list(organ)
    assert icd_in("severe-liver-kidney-disease", "N18.30", "K70.0", "K74.0") == []


def test_steroid_families_follow_the_rules_page():
    """S5: every diabetes type with hyperglycemia (E08-E13 .65), not E11.9; S6: SNOMED
    77386006 and 72892002 (normal pregnancy), Z33.1, Z34.x, O09.x."""
    diabetes = ("E08.65", "E09.65", "E10.65", "E11.65", "E13.65")
    assert icd_in("uncontrolled-diabetes", *diabetes) == list(diabetes)
    assert icd_in("uncontrolled-diabetes", "E11.9", "E10.9") == []
    pregnancy = Terminology.load()["pregnancy"]
    assert pregnancy.contains(SNOMED, "77386006")
    assert pregnancy.contains(SNOMED, "72892002")
    pregnant = ("Z33.1", "Z34.00", "Z34.90", "O09.00", "O09.90")
    assert icd_in("pregnancy", *pregnant) == list(pregnant)
    assert icd_in("pregnancy", "Z33.2") == []  # elective termination


def test_diagnosis_families_of_eligibility_and_referral_follow_the_rules_page():
    """E1: M79.1, M79.10-M79.18 and G44.2x qualify; fibromyalgia and regional pain codes do
    not. R5: M54.1x, M54.3x, M54.4x, M50.1x, M51.1x, M47.2x. R4: G44.2x apart from G43.x."""
    qualifying = ("M79.1", "M79.10", "M79.11", "M79.12", "M79.18", "G44.209", "G44.221")
    assert icd_in("qualifying-diagnoses", *qualifying) == list(qualifying)
    assert icd_in("qualifying-diagnoses", "M79.7", "M54.2", "M79.2") == []
    assert icd_in("fibromyalgia", "M79.7") == ["M79.7"]
    regional = ("M54.2", "M54.50", "M54.6", "M62.830")
    assert icd_in("regional-pain-diagnoses", *regional) == list(regional)
    radicular = ("M54.16", "M54.30", "M54.41", "M50.12", "M51.16", "M47.26")
    assert icd_in("radiculopathy", *radicular) == list(radicular)
    assert icd_in("radiculopathy", "M54.2", "M54.50") == []
    assert icd_in("tension-type-headache", "G44.209", "G43.909") == ["G44.209"]
    assert icd_in("migraine", "G43.909", "G44.209") == ["G43.909"]


def test_observation_codes_follow_the_rules_page():
    """Section 1: pain scores (72514-3 preferred), HbA1c, pregnancy status, INR, platelets."""
    vs = Terminology.load()
    assert {c.code for c in vs["pain-scores"].concepts} == {"72514-3", "38208-5", "75893-8"}
    assert vs["pain-scores"].rank(LOINC, "72514-3") < vs["pain-scores"].rank(LOINC, "38208-5")
    assert {c.code for c in vs["inr"].concepts} == {"6301-6", "34714-6", "46418-0"}
    assert {c.code for c in vs["platelet-count"].concepts} == {"777-3", "26515-7", "778-1"}
    assert vs["hba1c"].contains(LOINC, "4548-4")
    assert vs["pregnancy-status"].contains(LOINC, "82810-3")


BRANDS = (
    "Coumadin",
    "Jantoven",
    "Eliquis",
    "Xarelto",
    "Pradaxa",
    "Savaysa",
    "Lovenox",
    "Fragmin",
    "Arixtra",
    "Plavix",
    "Effient",
    "Brilinta",
)


def test_drug_names_and_brands_follow_the_rules_page():
    """S2 amide anesthetics by brand and by class name; S3 antithrombotics by brand; S5/S6
    steroids by brand (EHRs send local codes with readable text)."""
    vs = Terminology.load()
    anesthetics = vs["local-anesthetics"]
    assert {
        brand: anesthetics.agent_in(brand)
        for brand in (
            "Xylocaine",
            "Marcaine",
            "Sensorcaine",
            "Naropin",
            "Carbocaine",
            "Polocaine",
            "Citanest",
            "Septocaine",
        )
    } == {
        "Xylocaine": "lidocaine",
        "Marcaine": "bupivacaine",
        "Sensorcaine": "bupivacaine",
        "Naropin": "ropivacaine",
        "Carbocaine": "mepivacaine",
        "Polocaine": "mepivacaine",
        "Citanest": "prilocaine",
        "Septocaine": "articaine",
    }
    assert anesthetics.agent_in("Amide local anesthetics (class)") == "class"
    assert anesthetics.agent_in("Procaine") is None  # an ester, not an amide
    antithrombotics = vs["anticoagulants"]
    assert {brand: antithrombotics.agent_in(brand) for brand in BRANDS} == {
        "Coumadin": "warfarin",
        "Jantoven": "warfarin",
        "Eliquis": "apixaban",
        "Xarelto": "rivaroxaban",
        "Pradaxa": "dabigatran",
        "Savaysa": "edoxaban",
        "Lovenox": "enoxaparin",
        "Fragmin": "dalteparin",
        "Arixtra": "fondaparinux",
        "Plavix": "clopidogrel",
        "Effient": "prasugrel",
        "Brilinta": "ticagrelor",
    }
    assert antithrombotics.agent_in("Aspirin 81 MG Oral Tablet") is None
    steroids = vs["corticosteroids"]
    assert steroids.contains(RXNORM, "1085754")  # triamcinolone acetonide 40 MG/ML
    assert steroids.agent_in("Kenalog-40") == "triamcinolone"
    assert steroids.agent_in("Depo-Medrol") == "methylprednisolone"


def test_body_regions_follow_the_rules_page():
    """Section 1 muscle map and roles: trapezius and levator scapulae -> shoulder girdle;
    sternocleidomastoid, scalenes, suboccipitals -> neck; thoracic paraspinals -> upper back;
    quadratus lumborum -> lower back; gluteals, piriformis, iliopsoas -> buttock / hip; over
    the lung: trapezius, scalenes, intercostals, upper back; not compressible: quadratus
    lumborum, iliopsoas. ICD-10-CM site axis: L03.221 is the neck, L03.113 the right arm."""
    regions = Terminology.load()["body-regions"]
    sites = {
        "31764008": ("shoulder-girdle", {"over-lung"}),  # trapezius
        "11327007": ("shoulder-girdle", set()),  # levator scapulae
        "22823000": ("neck", set()),  # sternocleidomastoid
        "714469004": ("neck", {"over-lung"}),  # scalene
        "244847002": ("neck", set()),  # suboccipital
        "424072006": ("upper-back", {"over-lung"}),  # thoracic paraspinous group
        "53967007": ("chest-wall", {"over-lung"}),  # external intercostal
        "6001004": ("lower-back", {"non-compressible"}),  # quadratus lumborum
        "206007": ("buttock-hip", set()),  # gluteus maximus
        "75699001": ("buttock-hip", set()),  # piriformis
        "68455001": ("buttock-hip", {"non-compressible"}),  # iliopsoas
    }
    for code, (region, roles) in sites.items():
        assert regions.site(SNOMED, code) == (region, None), code
        assert regions.roles_of(SNOMED, code) & {"over-lung", "non-compressible"} == roles, code
    assert regions.site(ICD10CM, "L03.221") == ("neck", None)
    assert regions.site(ICD10CM, "L03.113") == ("upper-limb", "right")
    assert regions.site(ICD10CM, "L03.03")[0] == "lower-limb"  # cellulitis of toe


def test_physical_therapy_roles_follow_the_rules_page():
    """P1: 91251008 is therapy (a rehabilitation plan); the exercise activities are 229065009,
    229070002, 183301007, 872781000000100 and CPT 97110; 872781000000100 is also the
    musculoskeletal care-plan category; the suggested referral is a pt_referral code, to a
    physiotherapist (36682004)."""
    vs = Terminology.load()
    pt = vs["physical-therapy"]
    assert "therapy" in pt.roles_of(SNOMED, "91251008")
    for code in ("229065009", "229070002", "183301007", "872781000000100"):
        assert "exercise" in pt.roles_of(SNOMED, code), code
        assert "therapy" not in pt.roles_of(SNOMED, code), code
    assert "exercise" in pt.roles_of(CPT, "97110")
    assert "msk-care-plan" in pt.roles_of(SNOMED, "872781000000100")
    suggested = vs.role("physical-therapy", "pt_referral").suggested
    assert suggested.system == SNOMED
    assert "pt_referral" in pt.roles_of(SNOMED, suggested.code)
    assert vs["pt-performer"].suggested.code == "36682004"


def test_payer_typology_follows_the_rules_page():
    """Section 2b: Source of Payment Typology 1x -> Medicare, 5x and 6x -> commercial; Medicaid
    (2) is in neither."""
    vs = Terminology.load()
    assert vs["payer-medicare"].contains(SOPT, "1")
    assert vs["payer-medicare"].contains(SOPT, "121")
    assert vs["payer-commercial"].contains(SOPT, "5")
    assert vs["payer-commercial"].contains(SOPT, "6")
    assert not vs["payer-medicare"].contains(SOPT, "2")
    assert not vs["payer-commercial"].contains(SOPT, "2")


def test_procedure_and_guidance_codes_follow_the_rules_page():
    vs = Terminology.load()
    assert {c.code for c in vs["tpi-procedures"].concepts} >= {"20552", "20553"}
    assert vs["imaging-guidance"].contains(CPT, "76942")
    assert vs["imaging-guidance"].contains(CPT, "77002")
    assert vs["anesthetic-allergy-history"].contains(ICD10CM, "Z88.4")


def test_no_stub_value_set_is_left():
    """Every built-in value set is the real list, with its sources (no lead's STUB)."""
    for path in sorted(BUILTIN_DIR.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert not doc["description"].startswith("STUB"), path.name


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


def test_value_sets_load_from_a_zipped_package(tmp_path):
    """spark-submit ships the package as a zip (--py-files): the built-in value sets must
    be read from inside it, not looked for as files on disk."""
    import subprocess
    import sys
    import zipfile

    archive = tmp_path / "cards.zip"
    root = BUILTIN_DIR.parent.parent
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in (root / "cards").rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                bundle.write(path, path.relative_to(root).as_posix())
    script = (
        "import cards.terminology as t; "
        "assert '.zip' in t.__file__, t.__file__; "
        "print(len(t.Terminology.load()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(archive), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) == len(list(BUILTIN_DIR.glob("*.json")))
