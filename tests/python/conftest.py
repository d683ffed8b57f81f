"""The outside-in suite: the platform as analysts and other outside callers see
it, through the built binary, NATS and the documents they are given.

`make test` (after the cargo tests) and `make outside-in` run it as
`.venv/bin/python -m pytest tests/python`, with PostgreSQL and NATS from
`scripts/devenv.py up` and the tools from `scripts/devenv.py outside-in-tools`
(passed as JSON in BALADIYA_OUTSIDE_IN_TOOLS; without it the suite asks devenv
itself).

Fixtures for any test here:

- `tools`: where Python, node and the npm packages are.
- `protos`: Python classes (messages and gRPC stubs) generated from `proto/` by
  grpcio-tools into a temporary directory put on `sys.path`, so a test can
  `from baladiya.intake.v1 import intake_pb2, intake_pb2_grpc`.
- `platform`: one `baladiya run --services all` for the whole session (a
  `Platform`), configured by `tests/python/platform.toml` (the manual clock, the
  seed from `deploy/seed`, quick relays and retries: add what other tests need
  there) plus, in the environment, free loopback ports, a fresh database and a
  unique events namespace; it is stopped and its database and streams dropped
  at the end. It gives the gRPC and HTTP addresses, dev tokens, the binary, the
  namespace and helpers (`grpc_channel`, `metadata`, `token`, `settle`,
  `http_get`, `command`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).resolve().parent / "platform.toml"


@pytest.fixture(scope="session")
def tools() -> dict:
    given = os.environ.get("BALADIYA_OUTSIDE_IN_TOOLS")
    if given:
        return json.loads(given)
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "devenv.py"), "outside-in-tools"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def protoc(out: Path, grpc: bool = True) -> None:
    """Generates Python classes (and gRPC stubs) of every file under proto/ into `out`."""
    files = sorted(p.relative_to(ROOT / "proto").as_posix() for p in (ROOT / "proto").rglob("*.proto"))
    flags = [f"--python_out={out}"] + ([f"--grpc_python_out={out}"] if grpc else [])
    done = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", *flags, *files],
        capture_output=True, text=True, cwd=ROOT / "proto",
    )
    assert done.returncode == 0, f"protoc failed:\n{done.stderr}"


@pytest.fixture(scope="session")
def protos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("protos")
    protoc(out)
    sys.path.insert(0, str(out))
    return out


# ---------------------------------------------------------------- the platform


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(base: str, name: str) -> str:
    """`base` (a PostgreSQL URL) naming database `name` instead."""
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def binary() -> Path:
    path = Path(os.environ.get("BALADIYA_BIN", ROOT / "target" / "debug" / "baladiya"))
    assert path.exists(), f"{path} is missing: run `cargo build --bin baladiya` (make test builds it)"
    return path


def nats_call(url: str, work):
    """Runs `work(js)` against a JetStream context on `url`."""
    import nats

    async def run():
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=1)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


@dataclass
class Platform:
    """A running `baladiya run --services all` and what it takes to call it."""

    binary: Path
    grpc: str  # host:port of the gRPC port (plaintext)
    http: str  # host:port of the HTTP port (/healthz /readyz /metrics /dashboard ...)
    nats_url: str
    namespace: str  # events.namespace: subjects are <namespace>.baladiya..., streams <namespace>_<NAME>
    database_url: str
    env: dict  # the process's whole environment
    config: Path  # its --config file
    log: Path
    tokens: dict = field(default_factory=dict)  # channel (CHANNEL_MOBILE_APP), admin, analyst, operator
    process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.http}"

    @property
    def clock_start(self) -> dt.datetime:
        """Where the manual clock started (`clock.start` in the config)."""
        import tomllib

        start = tomllib.loads(self.config.read_text())["clock"]["start"]
        return dt.datetime.fromisoformat(start)

    def command(self, *args: str) -> list[str]:
        """A command line of the binary with the platform's configuration;
        run it with `env=platform.env` and `cwd=ROOT`."""
        return [str(self.binary), "--config", str(self.config), *args]

    def token(self, role: str, **options: str) -> str:
        """`baladiya dev-token --role ROLE [--channel ..] [--partner ..] [--municipality ..]`."""
        args = self.command("dev-token", "--role", role)
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", value]
        out = subprocess.run(args, env=self.env, cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def metadata(self, role: str = "channel") -> list[tuple[str, str]]:
        """gRPC call metadata with the bearer token of `role` (a key of `tokens`)."""
        return [("authorization", f"Bearer {self.tokens[role]}")]

    def grpc_channel(self):
        import grpc

        return grpc.insecure_channel(self.grpc)

    def subject(self, subject: str) -> str:
        return f"{self.namespace}.{subject}"

    def stream(self, name: str) -> str:
        return f"{self.namespace}_{name}"

    def http_get(self, path: str, headers: dict | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.http_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stream_sequences(self) -> dict[str, int]:
        """How many messages each of this namespace's streams holds. Not the
        last sequence: routing's and licensing's relays publish a watermark
        every 100 ms while idle, each replacing the one before (a rollup), so
        an idle stream's count stays put while its sequence grows."""

        async def work(js):
            out = {}
            for info in await js.streams_info():
                if info.config.name.startswith(f"{self.namespace}_"):
                    out[info.config.name] = info.state.messages
            return out

        return nats_call(self.nats_url, work)

    def settle(self, quiet: float = 1.5, timeout: float = 60) -> dict[str, int]:
        """Waits until no stream of the namespace has grown for `quiet` seconds
        (the relays and consumers have caught up); returns the counts."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            now = self.stream_sequences()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return now
            time.sleep(0.25)
        raise AssertionError(f"the event streams did not settle within {timeout}s: {last}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start(platform: Platform, timeout: float = 120) -> None:
    out = platform.log.open("ab")
    platform.process = subprocess.Popen(
        platform.command("run", "--services", "all"),
        env=platform.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if platform.process.poll() is not None:
            raise AssertionError(f"baladiya exited during start ({platform.process.returncode}):\n{platform.log_tail()}")
        try:
            if platform.http_get("/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"baladiya was not ready within {timeout}s:\n{platform.log_tail()}")


def stop(platform: Platform) -> None:
    p = platform.process
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def drop(platform: Platform) -> None:
    """Drops the namespace's streams and the database."""

    async def work(js):
        for name in [s.config.name for s in await js.streams_info()]:
            if name.startswith(f"{platform.namespace}_"):
                await js.delete_stream(name)

    try:
        nats_call(platform.nats_url, work)
    except Exception as e:  # noqa: BLE001 - cleanup goes on with the database
        print(f"outside-in: could not delete the streams of {platform.namespace}: {e!r}", file=sys.stderr)
    import psycopg

    name = urllib.parse.urlsplit(platform.database_url).path.lstrip("/")
    with psycopg.connect(database_url(platform.database_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_for_seed_replica(platform: Platform, timeout: float = 60) -> None:
    """Waits until the SLA watcher holds its replica of the seeded agreements and
    calendars (as the Rust harness does): a case that arrives before that waits
    in retries and may be parked."""
    import psycopg

    seed = ROOT / "deploy" / "seed" / "partners"
    expected = {
        "agreements": (seed / "agreements.toml").read_text().count("[[agreement]]"),
        "calendars": (seed / "calendars.toml").read_text().count("[[calendar]]"),
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(platform.database_url) as conn:
                have = {t: conn.execute(f"SELECT count(*) FROM sla_watcher.{t}").fetchone()[0] for t in expected}
            if all(have[t] >= n for t, n in expected.items()):
                return
        except psycopg.Error:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the SLA watcher did not replicate the seed within {timeout}s:\n{platform.log_tail()}")


@pytest.fixture(scope="session")
def platform(tools, tmp_path_factory) -> Platform:
    base_db = os.environ.get("BALADIYA__DATABASE__URL", "postgres://postgres@127.0.0.1:5432/postgres")
    nats_url = os.environ.get("BALADIYA__NATS__URL", "nats://127.0.0.1:4222")
    run_id = uuid.uuid4().hex
    namespace = f"py{run_id[:10]}"
    grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    db_url = database_url(base_db, f"py_{run_id}")
    # Nothing else from this environment: no stray BALADIYA__* setting.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "BALADIYA__SERVER__GRPC_ADDR": grpc_addr,
        "BALADIYA__SERVER__HTTP_ADDR": http_addr,
        "BALADIYA__DATABASE__URL": db_url,
        "BALADIYA__NATS__URL": nats_url,
        "BALADIYA__EVENTS__NAMESPACE": namespace,
    }
    p = Platform(
        binary=binary(), grpc=grpc_addr, http=http_addr, nats_url=nats_url, namespace=namespace,
        database_url=db_url, env=env, config=CONFIG, log=tmp_path_factory.mktemp("platform") / "baladiya.log",
    )
    try:
        start(p)
        wait_for_seed_replica(p)
        p.tokens = {
            "channel": p.token("channel", channel="CHANNEL_MOBILE_APP"),
            "admin": p.token("admin"),
            "analyst": p.token("analyst"),
            "operator": p.token("operator"),
        }
        yield p
    finally:
        stop(p)
        drop(p)


# ---------------------------------------------------------------- reports

# Inside the service areas of deploy/seed/intake/service_areas.toml.
CENTRES = {
    "RIYADH": (24.70, 46.70),
    "JEDDAH": (21.55, 39.20),
    "MAKKAH": (21.42, 39.82),
    "MADINAH": (24.47, 39.60),
    "EASTERN": (26.40, 50.10),
    "MUSCAT": (23.58, 58.40),
}
_next_spot = {code: 0 for code in CENTRES}


def spot(municipality: str) -> tuple[float, float]:
    """A new point in `municipality`, about 1.1 km from any other this session
    gave out (wider than any category's duplicate radius)."""
    i = _next_spot[municipality]
    _next_spot[municipality] += 1
    lat, lon = CENTRES[municipality]
    return lat + 0.01 * (i % 10), lon + 0.01 * (i // 10)


def submit_report(platform: Platform, municipality: str, category: str = "POTHOLE",
                  where: tuple[float, float] | None = None):
    """SubmitReport over gRPC as the mobile app; returns the response."""
    from baladiya.common.v1 import common_pb2
    from baladiya.intake.v1 import intake_pb2, intake_pb2_grpc

    lat, lon = where or spot(municipality)
    request = intake_pb2.SubmitReportRequest(
        request_id=str(uuid.uuid4()),
        channel=intake_pb2.CHANNEL_MOBILE_APP,
        category_code=category,
        description=f"Outside-in test report in {municipality}",
        location=common_pb2.Location(latitude=lat, longitude=lon),
    )
    with platform.grpc_channel() as channel:
        return intake_pb2_grpc.IntakeServiceStub(channel).SubmitReport(
            request, metadata=platform.metadata("channel"), timeout=15
        )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
