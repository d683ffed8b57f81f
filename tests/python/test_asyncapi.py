"""docs/asyncapi.yaml and docs/analysts.md: valid, current, complete, and in
agreement with the code, the protos and each other."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from code_events import published_event_types
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import asyncapi_gen  # noqa: E402

ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
ANALYSTS = ROOT / "docs" / "analysts.md"


@pytest.fixture(scope="module")
def doc() -> dict:
    return yaml.safe_load(ASYNCAPI.read_text())


def messages(doc: dict) -> dict[str, dict]:
    """Each channel's one message, by channel id."""
    out = {}
    for cid, channel in doc["channels"].items():
        (ref,) = channel["messages"].values()
        out[cid] = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
    return out


def validate(tools: dict, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tools["node"], str(ROOT / "scripts" / "asyncapi-validate.mjs"), "--strict",
         "--modules", tools["node_modules"], str(path)],
        capture_output=True, text=True, cwd=ROOT,
    )


def test_the_document_validates_with_the_asyncapi_parser(tools):
    done = validate(tools, ASYNCAPI)
    assert done.returncode == 0, f"@asyncapi/parser:\n{done.stderr}{done.stdout}"
    summary = yaml.safe_load(done.stdout)
    assert summary["asyncapi"] == "3.0.0"
    assert summary["channels"] == summary["operations"] == summary["messages"] == len(published_event_types())


def test_the_validator_reports_what_is_wrong(tools, tmp_path):
    # Not vacuous: an address parameter without a definition, and a payload
    # that points nowhere, are refused with the parser's words.
    text = ASYNCAPI.read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        text.replace("received.{municipality}.{category}", "received.{municipality}.{categry}", 1)
        .replace("schemas/baladiya.intake.events.v1.ReportRated'", "schemas/Nowhere'", 1)
    )
    done = validate(tools, broken)
    assert done.returncode == 1
    assert "categry" in done.stderr and "asyncapi3-channel-parameters" in done.stderr, done.stderr
    assert "#/components/schemas/Nowhere" in done.stderr, done.stderr


def test_the_document_and_the_page_are_generated_from_current_sources():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "asyncapi_gen.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, f"{done.stderr}\n{done.stdout[-4000:]}"


def test_every_event_type_in_the_code_is_in_the_document_and_nothing_else(doc):
    in_code = published_event_types()
    assert len(in_code) >= 40, sorted(in_code)
    documented = {m["name"] for m in messages(doc).values()}
    assert not in_code - documented, f"published in crates/ but not in docs/asyncapi.yaml (add them to EVENTS in scripts/asyncapi_gen.py): {sorted(in_code - documented)}"
    assert not documented - in_code, f"in docs/asyncapi.yaml but published nowhere in crates/: {sorted(documented - in_code)}"


def test_every_event_type_in_the_code_is_on_the_analysts_page():
    page = ANALYSTS.read_text()
    missing = [t for t in sorted(published_event_types())
               if f"sa.baladiya.{t}.v1" not in page or not re.search(rf"baladiya\.{re.escape(t)}[.`]", page)]
    assert not missing, f"docs/analysts.md does not show: {missing}"


def test_the_analysts_table_is_the_document_rendered(doc):
    page = ANALYSTS.read_text()
    assert asyncapi_gen.TABLE_BEGIN in page and asyncapi_gen.TABLE_END in page
    shown = page.split(asyncapi_gen.TABLE_BEGIN, 1)[1].split(asyncapi_gen.TABLE_END, 1)[0].strip()
    assert shown == asyncapi_gen.events_table(doc), "docs/analysts.md's table differs from docs/asyncapi.yaml: run `make asyncapi`"
    rows = [line for line in shown.splitlines()[2:] if line.startswith("|")]
    assert len(rows) == len(doc["channels"])


def streams() -> dict[str, list[str]]:
    """Stream name -> subjects, from crates/platform/src/events/streams.rs."""
    text = (ROOT / "crates/platform/src/events/streams.rs").read_text()
    found = re.findall(r'name:\s*"([A-Z_]+)",\s*subjects:\s*&\[([^\]]*)\]', text)
    return {name: re.findall(r'"([^"]+)"', subjects) for name, subjects in found}


def covers(pattern: str, subject: str) -> bool:
    """Whether NATS subject `pattern` (with * and >) matches `subject`."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def concrete(address: str) -> str:
    return re.sub(r"\{[^}]+\}", "X", address)


def test_each_channel_agrees_with_its_message_stream_and_schema(doc):
    stream_subjects = streams()
    assert set(stream_subjects) == {"INTAKE", "ROUTING", "PARTNERS", "SLA", "LICENSING"}, stream_subjects
    schemas = doc["components"]["schemas"]
    for cid, message in messages(doc).items():
        channel = doc["channels"][cid]
        kind = message["name"]
        params = re.findall(r"\{([^}]+)\}", channel["address"])
        assert channel["address"] == "baladiya." + kind + "".join(f".{{{p}}}" for p in params), cid
        # Every domain event has scope tokens; a watermark, one per stream, has none.
        assert (params or kind.endswith(".watermark")) and set(params) == set(channel["parameters"]), cid
        assert message["x-cloudevents-type"] == f"sa.baladiya.{kind}.v1"
        overrides = message["headers"]["allOf"][1]["properties"]
        assert overrides["ce-type"]["const"] == message["x-cloudevents-type"]
        full = message["x-protobuf-message"]
        assert overrides["ce-dataschema"]["const"] == f"type.googleapis.com/{full}"
        assert message["payload"] == {"$ref": f"#/components/schemas/{full}"}
        payload = schemas[full]
        assert payload["properties"]["meta"]["allOf"] == [{"$ref": "#/components/schemas/baladiya.events.v1.EventMeta"}]
        for key in message["x-key-fields"]:
            assert resolve(schemas, payload, key) is not None, f"{cid}: key field {key} is not in {full}"
        stream = channel["x-jetstream-stream"]
        assert any(covers(s, concrete(channel["address"])) for s in stream_subjects[stream]), cid
        others = [n for n, subjects in stream_subjects.items() if n != stream and any(covers(s, concrete(channel["address"])) for s in subjects)]
        assert not others, f"{cid} would be captured by {others} too"


def resolve(schemas: dict, schema: dict, path: str):
    for part in path.split("."):
        schema = deref(schemas, schema)
        schema = schema.get("properties", {}).get(part)
        if schema is None:
            return None
    return schema


def deref(schemas: dict, schema: dict) -> dict:
    while True:
        if "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0]
        else:
            return schema


def test_every_event_message_in_the_protos_is_a_documented_payload(doc):
    # An event message is one whose field 1 is the EventMeta: each must be
    # some channel's payload (no event left undocumented on the proto side).
    cat = asyncapi_gen.Catalogue.load(asyncapi_gen.descriptor_set())
    events = {
        name for name, m in cat.messages.items()
        if ".events.v1." in name and m.field and m.field[0].number == 1
        and m.field[0].type_name == ".baladiya.events.v1.EventMeta"
    }
    payloads = {m["x-protobuf-message"] for m in messages(doc).values()}
    assert events, "no event messages found in proto/"
    assert events == payloads, f"undocumented: {sorted(events - payloads)}; not events: {sorted(payloads - events)}"


def test_the_wildcard_recipes_on_the_analysts_page_match_channels(doc):
    # Every subject pattern the page shows (with * or >) catches at least one
    # documented subject, so no recipe is a typo.
    page = ANALYSTS.read_text()
    addresses = [concrete(c["address"]) for c in doc["channels"].values()]
    patterns = set(re.findall(r"`(?:[A-Za-z0-9_-]+\.)?(baladiya\.[A-Za-z0-9_.*>-]*[*>][A-Za-z0-9_.*>-]*)`", page))
    assert len(patterns) >= 5, patterns
    for pattern in sorted(patterns):
        generic = ".".join("*" if t.isupper() else t for t in pattern.split("."))  # codes: any value
        assert any(covers(generic, a) for a in addresses), f"{pattern} matches no documented subject"


def test_the_code_reader_follows_helpers_and_refuses_what_it_cannot_follow(tmp_path):
    # The reader behind the completeness check, on a made-up crate: literals,
    # a parameter followed through a method and a helper, test modules and
    # comments ignored, and an event named by a computed value refused.
    from code_events import SourceError

    src = tmp_path / "crates" / "demo" / "src"
    src.mkdir(parents=True)
    (src / "lib.rs").write_text('''
const A: EventType = EventType::new("demo", "thing", "made");
// EventType::new("demo", "thing", "commented")
async fn emit(conn: &mut C, aggregate: &'static str, event: &'static str, x: impl FnOnce(A, B) -> Result<C, D>) {
    let kind = EventType::new("demo", aggregate, event);
}
impl Api {
    async fn step(&self, id: &str, event: &'static str, f: impl FnOnce(&mut R, &T) -> Result<F, E>) {
        emit(&mut tx, "thing", event, |m| M { m, s: "x, y" }).await
    }
    async fn go(&self) {
        self.step(&req.id, "stepped", |a, _| { Ok(()) }).await;
        emit(conn, "other", r#"raw"#.len(), |m| m);
    }
}
#[cfg(test)]
mod tests {
    fn t() { EventType::new("demo", "thing", "in_test"); }
}
''')
    with pytest.raises(SourceError, match=r"lib.rs:13: cannot tell which event"):
        published_event_types(tmp_path)
    (src / "lib.rs").write_text((src / "lib.rs").read_text().replace('r#"raw"#.len()', '"done"'))
    assert published_event_types(tmp_path) == {"demo.thing.made", "demo.thing.stepped", "demo.other.done"}
