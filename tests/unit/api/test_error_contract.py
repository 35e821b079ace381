"""One error shape and status for malformed bodies on every route; readable field paths; the
OpenAPI document states snooze's exactly-one-of rule."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.api.support import OPERATOR, Api, bearer

pytestmark = pytest.mark.unit

OP = bearer(OPERATOR)

BODY_ROUTES = [
    ("POST", "/v1/alerts/a-1/assign"),
    ("POST", "/v1/alerts/a-1/snooze"),
    ("POST", "/v1/ingest/payments"),
    ("POST", "/v1/ingest/contacts"),
    ("POST", "/v1/ingest/traccar"),
    ("PUT", "/v1/loans/L1"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("body", [b"{not json", b"", b'{"a": 1', b"\xff\xfe"])
async def test_malformed_json_is_422_invalid_request_naming_the_body(
    api: Api, method: str, path: str, body: bytes
) -> None:
    response = await api.client.request(
        method, path, content=body, headers={**OP, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    error = response.json()
    assert (error["error"], error["field"]) == ("invalid_request", "body")
    assert error["message"].startswith("body is not valid JSON")


def loan(**overrides: Any) -> dict[str, Any]:
    return {
        "borrower": {"name": "张三", "phone": "+8613800000001"},
        "vehicle": {"vin": "LSVAB12C3DE456701", "plate": "川A12341"},
        **overrides,
    }


@pytest.mark.parametrize(
    ("region", "fields"),
    [
        ({"type": "Triangle", "coordinates": []}, {"home_region"}),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]},
            {"home_region.coordinates.0"},
        ),
        ({"center": [95, 10], "radius_km": 5}, {"home_region.center.0"}),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 2]]]},
            {"home_region"},
        ),
    ],
)
async def test_region_errors_name_readable_paths(
    api: Api, region: dict[str, Any], fields: set[str]
) -> None:
    response = await api.client.put("/v1/loans/L1", json=loan(home_region=region), headers=OP)
    assert response.status_code == 422
    error = response.json()
    named = {e["field"] for e in error["errors"]}
    assert named == fields, error
    assert "function-after" not in response.text and "[" not in error["field"]


async def test_openapi_states_snoozes_exactly_one_of(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    snooze = schema["components"]["schemas"]["SnoozeIn"]
    alternatives = snooze["oneOf"]
    assert sorted(tuple(a["required"]) for a in alternatives) == [("minutes",), ("until",)]
