"""Property-based: whatever an EHR (or anyone) sends, the answer is a 2xx/4xx, never a 500.

Hypothesis generates CDS Hooks requests and FHIR resources with wrong types, deep nesting,
huge strings, invalid dates, unknown resource types, missing and extra fields.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.auth import AuthSettings
from conftest import service_client

ALLOWED = {200, 400, 401, 404, 412, 413}
CPT = "http://www.ama-assn.org/go/cpt"
RESOURCE_TYPES = [
    "Condition",
    "Procedure",
    "Observation",
    "MedicationRequest",
    "AllergyIntolerance",
    "ServiceRequest",
    "CarePlan",
    "PractitionerRole",
    "Medication",
    "Patient",
    "Bundle",
    "OperationOutcome",
    "Encounter",
    "NotAResource",
    "",
]
PREFETCH_KEYS = [
    "patient",
    "conditions",
    "procedures",
    "observations",
    "medications",
    "allergies",
    "serviceRequests",
    "carePlans",
    "practitionerRole",
    "unexpected",
]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return service_client(
        tmp_path_factory.mktemp("hostile"),
        auth=AuthSettings(enabled=False),
        max_body_bytes=1024 * 1024,
        fetch_deadline=0.2,
    )


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(
        [
            "2026-11-23",
            "2026-13-45",
            "2026",
            "2026-02",
            "yesterday",
            "2026-11-23T25:00:00Z",
            "x" * 5000,
            "\u0000",
            "active",
            "completed",
            "final",
            "draft",
        ]
    ),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)
codings = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "system": st.sampled_from(
                [
                    CPT,
                    "http://loinc.org",
                    "http://hl7.org/fhir/sid/icd-10-cm",
                    "http://snomed.info/sct",
                    "urn:oid:2.16.840.1.113883.6.90",
                ]
            )
            | json_values,
            "code": st.sampled_from(
                ["20552", "20553", "72514-3", "M79.12", "L03.113", "1364445", "308447003"]
            )
            | json_values,
            "display": st.text(max_size=20) | json_values,
        },
    ),
    max_size=3,
)
concepts = st.one_of(
    st.fixed_dictionaries({}, optional={"coding": codings, "text": json_values}), json_values
)
resources = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(RESOURCE_TYPES) | json_values},
    optional={
        "id": st.text(max_size=10) | json_values,
        "status": st.sampled_from(
            ["active", "completed", "final", "draft", "on-hold", "entered-in-error"]
        )
        | json_values,
        "code": concepts,
        "category": st.lists(concepts, max_size=2) | json_values,
        "clinicalStatus": concepts,
        "verificationStatus": concepts,
        "subject": st.fixed_dictionaries({"reference": st.text(max_size=20)}) | json_values,
        "performedDateTime": json_values,
        "effectiveDateTime": json_values,
        "valueQuantity": st.fixed_dictionaries({"value": json_values}) | json_values,
        "valueInteger": json_values,
        "bodySite": st.lists(concepts, max_size=2) | json_values,
        "medicationCodeableConcept": concepts,
        "specialty": st.lists(concepts, max_size=2) | json_values,
        "entry": json_values,
        "unknownVendorField": json_values,
    },
)
bundles = st.fixed_dictionaries(
    {
        "resourceType": st.just("Bundle"),
        "type": st.sampled_from(["searchset", "collection"]) | json_values,
    },
    optional={
        "entry": st.lists(
            st.fixed_dictionaries({"resource": resources}, optional={"search": json_values})
            | json_values,
            max_size=6,
        )
        | json_values,
        "link": json_values,
    },
)
requests_ = st.fixed_dictionaries(
    {},
    optional={
        "hook": st.sampled_from(
            ["order-select", "order-sign", "patient-view", "medication-prescribe"]
        )
        | json_values,
        "hookInstance": st.uuids().map(str) | json_values,
        "context": st.fixed_dictionaries(
            {},
            optional={
                "patientId": st.text(max_size=12) | json_values,
                "userId": st.sampled_from(["Practitioner/1", "PractitionerRole/r1"]) | json_values,
                "encounterId": json_values,
                "draftOrders": bundles | json_values,
                "selections": st.lists(
                    st.sampled_from(["ServiceRequest/tpi-1", "ServiceRequest/x"]) | json_values,
                    max_size=3,
                )
                | json_values,
            },
        )
        | json_values,
        "prefetch": st.dictionaries(
            st.sampled_from(PREFETCH_KEYS), bundles | resources | json_values, max_size=6
        )
        | json_values,
        "fhirServer": st.sampled_from(["https://ehr.example.org/fhir", "not a url", "ftp://x"])
        | json_values,
        "fhirAuthorization": st.fixed_dictionaries({"access_token": json_values}) | json_values,
        "extension": json_values,
    },
)


def check(response) -> None:
    assert response.status_code in ALLOWED, response.get_data(as_text=True)[:500]
    body = json.loads(response.get_data())
    if response.status_code == 200:
        assert isinstance(body["cards"], list) if "cards" in body else body["stored"] >= 1
    else:
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["diagnostics"]


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


@SETTINGS
@given(
    body=requests_,
    service=st.sampled_from(["tpi-order-select", "tpi-order-sign", "tpi-patient-view"]),
)
def test_any_request_shape_gets_a_well_formed_answer(client, body: Any, service: str):
    check(client.post(f"/cds-services/{service}", json=body))


@SETTINGS
@given(body=json_values)
def test_any_json_gets_a_well_formed_answer(client, body: Any):
    check(client.post("/cds-services/tpi-order-select", json=body))
    check(client.post("/cds-services/tpi-order-select/feedback", json=body))


@SETTINGS
@given(
    data=st.binary(max_size=2000),
    content_type=st.sampled_from(["application/json", "text/plain", "application/fhir+json", ""]),
)
def test_any_bytes_get_a_well_formed_answer(client, data: bytes, content_type: str):
    check(client.post("/cds-services/tpi-order-sign", data=data, content_type=content_type))


@SETTINGS
@given(
    feedback=st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "card": json_values | st.uuids().map(str),
                "outcome": st.sampled_from(["accepted", "overridden"]) | json_values,
                "acceptedSuggestions": st.lists(st.fixed_dictionaries({"id": json_values}))
                | json_values,
                "overrideReason": st.fixed_dictionaries(
                    {}, optional={"reason": json_values, "userComment": json_values}
                )
                | json_values,
                "outcomeTimestamp": st.sampled_from(["2026-11-23T10:00:00Z", "2026-11-23", "soon"])
                | json_values,
            },
        ),
        max_size=4,
    )
)
def test_any_feedback_gets_a_well_formed_answer(client, feedback: list):
    check(client.post("/cds-services/tpi-patient-view/feedback", json={"feedback": feedback}))


TPI_ORDER = {
    "resourceType": "ServiceRequest",
    "id": "tpi-1",
    "status": "draft",
    "intent": "order",
    "code": {"coding": [{"system": CPT, "code": "20552"}]},
    "subject": {"reference": "Patient/p1"},
}


@SETTINGS
@given(
    prefetch=st.fixed_dictionaries(
        {key: bundles | resources | st.none() for key in PREFETCH_KEYS[:-1]}
    ),
    drafts=st.lists(resources, max_size=4),
    hook=st.sampled_from(["order-select", "order-sign", "patient-view"]),
)
def test_hostile_resources_inside_a_valid_request_never_break_the_engine(
    client, prefetch, drafts, hook
):
    """The envelope is right, so every generated resource reaches the record and the rules."""
    context: dict[str, Any] = {"patientId": "p1", "userId": "PractitionerRole/r1"}
    if hook != "patient-view":
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": TPI_ORDER}] + [{"resource": r} for r in drafts],
        }
    if hook == "order-select":
        context["selections"] = ["ServiceRequest/tpi-1"]
    body = {
        "hook": hook,
        "hookInstance": "0e3c9a5e-3d8b-4d2f-9a51-1b2c3d4e5f60",
        "context": context,
        "prefetch": prefetch,
    }
    service = {
        "order-select": "tpi-order-select",
        "order-sign": "tpi-order-sign",
        "patient-view": "tpi-patient-view",
    }[hook]
    response = client.post(f"/cds-services/{service}", json=body)
    check(response)


ODD_VALUES = [5, "text", None, True, {"a": 1}, [1, "x"]]


@pytest.mark.parametrize("odd", ODD_VALUES)
@pytest.mark.parametrize(
    "where",
    ["bodySite.coding", "code.coding.system", "bodySite.coding.system", "reasonCode.coding"],
)
def test_odd_types_in_the_tpi_order_give_cards_with_valid_suggestions(client, where, odd):
    """Whatever JSON types a caller puts in the TPI draft order, the answer is cards (never
    a 500), and a suggested referral copies only well-formed parts of the order."""
    order = json.loads(json.dumps(TPI_ORDER))
    order["bodySite"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "45048000"}]}]
    order["reasonCode"] = [{"coding": [{"system": "http://x", "code": "y"}]}]
    if where == "bodySite.coding":
        order["bodySite"][0]["coding"] = odd
    elif where == "bodySite.coding.system":
        order["bodySite"][0]["coding"][0]["system"] = odd
    elif where == "reasonCode.coding":
        order["reasonCode"][0]["coding"] = odd
    else:
        order["code"]["coding"].append({"system": odd, "code": "20552"})
    body = {
        "hook": "order-sign",
        "hookInstance": "0e3c9a5e-3d8b-4d2f-9a51-1b2c3d4e5f61",
        "context": {
            "patientId": "p1",
            "userId": "Practitioner/1",
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": order}],
            },
        },
        "prefetch": {key: None for key in PREFETCH_KEYS[:-1]},
    }
    response = client.post("/cds-services/tpi-order-sign", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    for card in response.get_json()["cards"]:
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                if action["type"] == "create":
                    ServiceRequest.model_validate(action["resource"])
