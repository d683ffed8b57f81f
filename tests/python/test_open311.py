"""The Open311 GeoReport v2 facade read by a client library nobody here wrote
(`georeport` from PyPI), in both formats, against `run --services all`.

Requests are created with a plain form POST (georeport only reads); they are
then listed, read and followed until routed with an SLA deadline, as a city
app would. Reports go to EASTERN, which the other outside-in tests leave alone.
"""

from __future__ import annotations

import time

import pytest
import requests
from georeport import GeoReport

from conftest import spot

API_KEY = "outside-in-open311-key-0001"


@pytest.fixture(scope="module")
def base(platform) -> str:
    return f"{platform.http_url}/open311/v2"


def create(base: str, **fields) -> requests.Response:
    return requests.post(f"{base}/requests.json", data={"api_key": API_KEY, **fields}, timeout=15)


@pytest.fixture(scope="module")
def created(base) -> list[str]:
    ids = []
    for i in range(2):
        lat, lon = spot("EASTERN")
        r = create(base, jurisdiction_id="EASTERN", service_code="POTHOLE", lat=str(lat), long=str(lon),
                   description=f"Open311 pothole {i}", first_name="Noura",
                   **{"attribute[priority_hint]": "HIGH"})
        assert r.status_code == 201, r.text
        assert r.headers["content-type"].startswith("application/json")
        (answer,) = r.json()
        ids.append(answer["service_request_id"])
    return ids


@pytest.mark.parametrize("output_format", ["json", "xml"])
def test_the_service_list_and_definitions_read_with_georeport(base, output_format):
    client = GeoReport(base, jurisdiction="EASTERN", output_format=output_format)
    services = client.get_service_list()
    pothole = next(s for s in services if s["service_code"] == "POTHOLE")
    assert pothole["service_name"] == "Pothole"
    assert str(pothole["metadata"]).lower() == "true"
    assert pothole["type"] == "realtime"
    definition = client.get_service_definition("POTHOLE")
    attributes = definition["attributes"]
    if output_format == "xml":
        attributes = attributes["attribute"]
    codes = [a["code"] for a in attributes]
    assert codes == ["observed_at", "priority_hint"]


@pytest.mark.parametrize("output_format", ["json", "xml"])
def test_requests_are_listed_and_followed_until_routed(base, created, output_format):
    client = GeoReport(base, jurisdiction="EASTERN", output_format=output_format)

    def as_list(found):
        return found if isinstance(found, list) else [found]

    listed = as_list(client.get_service_requests(service_code="POTHOLE", status="open"))
    assert {r["service_request_id"] for r in listed} >= set(created)
    both = as_list(client.get_service_requests(service_request_id=",".join(created)))
    assert sorted(r["service_request_id"] for r in both) == sorted(created)
    if output_format == "json":
        assert client.get_service_requests(status="closed") == []

    deadline = time.monotonic() + 60
    while True:
        one = client.get_service_request(created[0])
        if one.get("agency_responsible") and one.get("expected_datetime"):
            break
        assert time.monotonic() < deadline, f"never routed with a deadline: {one}"
        time.sleep(0.5)
    assert one["status"] == "open"
    assert one["service_code"] == "POTHOLE"
    assert one["requested_datetime"].endswith("Z")
    assert float(one["lat"]) > 26


def test_errors_follow_the_specification(base):
    r = requests.post(f"{base}/requests.json", data={"service_code": "POTHOLE"}, timeout=15)
    assert r.status_code == 403
    assert r.json()[0]["code"] == 403
    r = create(base, service_code="POTHOLE")
    assert r.status_code == 400
    assert r.json()[0]["description"].startswith("lat:")
    r = requests.get(f"{base}/services/NOPE.xml", timeout=15)
    assert r.status_code == 404
    assert "<errors><error><code>404</code>" in r.text
    with pytest.raises(requests.HTTPError):
        GeoReport(base).get_service_request("EST-2026-9999999")
