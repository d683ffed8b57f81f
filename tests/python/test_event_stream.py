"""What the running platform really publishes agrees with docs/asyncapi.yaml:
every message on every stream of the namespace is on a documented subject,
with the documented headers, and its payload decodes as the documented
message, whose EventMeta repeats the headers."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import re
import time
import urllib.parse

import pytest
import yaml

from conftest import ROOT, submit_report

ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
# Published by any start (the seed) or by the reports below.
MUST_SEE = {
    "partners.partner.upserted",
    "partners.agreement.published",
    "partners.calendar.changed",
    "intake.report.received",
    "intake.report.duplicate_linked",
    "routing.case.routed",
    "routing.case.supporter_added",
    "routing.case.acknowledged",
    "routing.case.work_started",
    "routing.case.rejected",
    "sla.clock.started",
    "sla.clock.met",
}


def channel_patterns(doc: dict) -> list[tuple[re.Pattern, dict]]:
    out = []
    for channel in doc["channels"].values():
        (ref,) = channel["messages"].values()
        message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        regex = re.escape(channel["address"])
        regex = re.sub(r"\\\{[^}]+\\\}", "[A-Za-z0-9_-]+", regex)
        out.append((re.compile(f"^{regex}$"), message))
    return out


def message_class(full_name: str):
    from google.protobuf import descriptor_pool, message_factory

    return message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(full_name))


def read_all(platform) -> list[tuple[str, dict, bytes]]:
    """Every message of every stream of the namespace: (subject, headers, data)."""
    import nats
    from nats.js.api import DeliverPolicy

    async def run():
        nc = await nats.connect(platform.nats_url)
        js = nc.jetstream()
        out = []
        try:
            for info in await js.streams_info():
                name = info.config.name
                if not name.startswith(f"{platform.namespace}_") or info.state.messages == 0:
                    continue
                sub = await js.subscribe(info.config.subjects[0], stream=name, ordered_consumer=True,
                                         deliver_policy=DeliverPolicy.ALL)
                for _ in range(info.state.messages):
                    msg = await sub.next_msg(timeout=10)
                    out.append((msg.subject, dict(msg.headers or {}), msg.data))
                await sub.unsubscribe()
        finally:
            await nc.close()
        return out

    return asyncio.run(run())


def kind_of(headers: dict) -> str:
    return urllib.parse.unquote(headers.get("ce-type", "")).removeprefix("sa.baladiya.").removesuffix(".v1")


def decode(headers: dict, data: bytes):
    payload = message_class(urllib.parse.unquote(headers["ce-dataschema"]).removeprefix("type.googleapis.com/"))()
    payload.ParseFromString(data)
    return payload


def wait_for(platform, match, timeout: float = 60):
    """The payload of the first published event `match(kind, payload)` accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, headers, data in read_all(platform):
            payload = decode(headers, data)
            if match(kind_of(headers), payload):
                return payload
        time.sleep(0.5)
    raise AssertionError(f"no such event within {timeout}s:\n{platform.log_tail()}")


def act_on(platform, case_id: str, assignee: str) -> None:
    """Acknowledge, start work on and reject a case, as its assignee."""
    from baladiya.routing.v1 import routing_pb2, routing_pb2_grpc

    metadata = [("authorization", f"Bearer {platform.token('partner', partner=assignee)}")]
    action = routing_pb2.CaseAction(case_id=case_id)
    with platform.grpc_channel() as channel:
        cases = routing_pb2_grpc.RoutingServiceStub(channel)
        cases.AcknowledgeCase(routing_pb2.AcknowledgeCaseRequest(action=action), metadata=metadata, timeout=15)
        cases.StartWork(routing_pb2.StartWorkRequest(action=action), metadata=metadata, timeout=15)
        cases.RejectCase(routing_pb2.RejectCaseRequest(action=action, reason="Not ours: a private street"),
                         metadata=metadata, timeout=15)


def test_what_the_platform_publishes_is_what_the_document_says(platform, protos):
    # Every generated module imported: their messages are in the default pool.
    for path in sorted(protos.rglob("*_pb2.py")):
        importlib.import_module(".".join(path.relative_to(protos).with_suffix("").parts))
    doc = yaml.safe_load(ASYNCAPI.read_text())
    patterns = channel_patterns(doc)

    # A report, and a duplicate of it (same place and category): received
    # twice, linked once, routed once with a supporter, clocks started. Then
    # its assignee acknowledges it (a clock met), starts work and rejects it.
    first = submit_report(platform, "EASTERN", category="STREET_LIGHTING")
    lat, lon = first.report.location.latitude, first.report.location.longitude
    second = submit_report(platform, "EASTERN", category="STREET_LIGHTING", where=(lat, lon))
    assert second.linked_as_duplicate
    routed = wait_for(platform, lambda kind, payload: kind == "routing.case.routed"
                      and payload.case.report_id == first.report.id)
    act_on(platform, routed.case.case_id, routed.case.assignee_code)

    published, seen = [], set()
    deadline = time.monotonic() + 60
    while not MUST_SEE <= seen and time.monotonic() < deadline:
        platform.settle(quiet=1.0)
        published = read_all(platform)
        seen = {kind_of(headers) for _, headers, _ in published}
    assert MUST_SEE <= seen, f"never published: {sorted(MUST_SEE - seen)}\n{platform.log_tail()}"

    prefix = f"{platform.namespace}."
    for subject, headers, data in published:
        assert subject.startswith(prefix), subject
        bare = subject[len(prefix):]
        matched = [m for p, m in patterns if p.match(bare)]
        assert len(matched) == 1, f"{bare} is on {len(matched)} documented channels"
        message = matched[0]
        where = f"{bare} ({message['name']})"

        schema = doc["components"]["schemas"]["CloudEventsHeaders"]
        missing = [h for h in schema["required"] if h not in headers]
        assert not missing, f"{where}: headers missing: {missing}"
        const = message["headers"]["allOf"][1]["properties"]
        for name in ("ce-type", "ce-source", "ce-dataschema"):
            assert urllib.parse.unquote(headers[name]) == const[name]["const"], f"{where}: {name}"
        assert headers["ce-specversion"] == "1.0"
        assert headers["content-type"] == "application/protobuf"
        assert headers["Nats-Msg-Id"] == headers["ce-id"], where

        payload = decode(headers, data)
        assert payload.DESCRIPTOR.full_name == message["x-protobuf-message"], where
        assert payload.meta.event_id == headers["ce-id"], where
        assert payload.meta.aggregate_id == urllib.parse.unquote(headers.get("ce-subject", "")), where
        ce_time = dt.datetime.fromisoformat(headers["ce-time"].replace("Z", "+00:00"))
        assert payload.meta.occurred_at.ToDatetime(dt.timezone.utc) == ce_time, where

        # The scope tokens are the payload's own codes.
        tokens = bare.split(".")[4:]
        if message["name"].startswith("intake.report."):
            assert tokens == [payload.municipality_code, payload.category_code], where
        elif message["name"].startswith("routing.case."):
            # (for a rejection, both name the body that rejected the case)
            assert tokens == [payload.case.municipality_code, payload.case.assignee_code], where
            if message["name"] == "routing.case.rejected":
                assert payload.case.assignee_code == routed.case.assignee_code != "MUN-TRIAGE", where
        elif message["name"].startswith("sla."):
            assert tokens == [payload.clock.partner_code or "_"], where
        elif message["name"] == "partners.partner.upserted":
            assert tokens == [payload.partner.code], where
        elif message["name"] == "partners.calendar.changed":
            assert tokens == [re.sub(r"[^A-Za-z0-9_-]", "_", payload.calendar.id)], where


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_the_platform_fixture_serves_http(platform, path):
    # The fixture other outside-in tests build on: its HTTP port answers.
    status, _ = platform.http_get(path)
    assert status == 200
