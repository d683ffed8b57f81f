#!/usr/bin/env python3
"""Live count of citizen reports per municipality, from Baladiya's event stream.

Reads `report received` events (`baladiya.intake.report.received.<MUNICIPALITY>.<CATEGORY>`
on stream INTAKE) through an ordered, ephemeral JetStream consumer, decodes each
protobuf payload with classes generated from `proto/`, and prints one line per
event: the municipality and its count so far, e.g. `RIYADH 3`. Everything else
goes to stderr.

    pip install -r examples/analyst/requirements.txt
    python examples/analyst/count_by_municipality.py                  # from now on
    python examples/analyst/count_by_municipality.py --since 24h      # replay the last day, then live
    python examples/analyst/count_by_municipality.py --all --seconds 10
    python examples/analyst/count_by_municipality.py --namespace t42 --municipality RIYADH --max-events 5

The Python classes are generated from `proto/` by grpcio-tools on first run
(into `examples/analyst/_generated/`, git-ignored; again whenever a .proto
changes). See docs/analysts.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CE_TYPE = "sa.baladiya.intake.report.received.v1"
DATASCHEMA = "type.googleapis.com/baladiya.intake.events.v1.ReportReceived"
SUBJECT = "baladiya.intake.report.received"
STREAM = "INTAKE"


def log(message: str) -> None:
    print(f"count_by_municipality: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- protobuf classes


def generate(proto_dir: Path, gen_dir: Path) -> None:
    """Generates the Python classes of every .proto under `proto_dir` into
    `gen_dir` with grpcio-tools, unless they are there already for these very
    files (a stamp holds a hash of them)."""
    files = sorted(p.relative_to(proto_dir).as_posix() for p in proto_dir.rglob("*.proto"))
    if not files:
        sys.exit(f"count_by_municipality: no .proto files under {proto_dir}")
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (proto_dir / name).read_bytes())
    stamp = gen_dir / ".stamp"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    log(f"generating Python classes from {proto_dir} into {gen_dir}")
    fresh = gen_dir.with_name(gen_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={fresh}", *files],
        capture_output=True, text=True, cwd=proto_dir,
    )
    if done.returncode != 0:
        shutil.rmtree(fresh, ignore_errors=True)
        sys.exit(f"count_by_municipality: protoc failed:\n{done.stderr}")
    (fresh / ".stamp").write_text(digest.hexdigest())
    shutil.rmtree(gen_dir, ignore_errors=True)
    fresh.rename(gen_dir)


# ---------------------------------------------------------------- options


def since(text: str) -> dt.datetime:
    """`--since`: an RFC 3339 instant, a date (midnight UTC), or an age such as
    `90m`, `24h`, `7d`."""
    age = re.fullmatch(r"(\d+)([smhd])", text)
    if age:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[age.group(2)]
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(**{unit: int(age.group(1))})
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an instant, date or age (90m, 24h, 7d): {text}") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Print a live count of citizen reports per municipality from Baladiya's INTAKE stream.",
    )
    p.add_argument("--nats", default=os.environ.get("BALADIYA__NATS__URL", "nats://127.0.0.1:4222"),
                   help="NATS URL(s), comma separated (default: $BALADIYA__NATS__URL or nats://127.0.0.1:4222)")
    p.add_argument("--namespace", default=os.environ.get("BALADIYA__EVENTS__NAMESPACE", ""),
                   help="the platform's events.namespace: subjects become <ns>.baladiya..., "
                        "the stream <ns>_INTAKE (default: $BALADIYA__EVENTS__NAMESPACE, else none)")
    p.add_argument("--user", default=os.environ.get("NATS_USER"), help="NATS user (default: $NATS_USER)")
    p.add_argument("--password", default=os.environ.get("NATS_PASSWORD"), help="NATS password (default: $NATS_PASSWORD)")
    p.add_argument("--creds", help="NATS .creds file (JWT mode)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--since", type=since, metavar="WHEN",
                       help="replay from this time, then go on live: RFC 3339 (2026-03-01T00:00:00+03:00), "
                            "a date (2026-03-01, UTC) or an age (90m, 24h, 7d); it is the time JetStream "
                            "stored the event, not ce-time")
    start.add_argument("--all", action="store_true", help="replay the whole stream, then go on live")
    p.add_argument("--municipality", action="append", default=[], metavar="CODE",
                   help="count only this municipality (repeatable); filtered by subject on the server")
    p.add_argument("--max-events", type=int, metavar="N", help="stop after N events")
    p.add_argument("--seconds", type=float, metavar="T", help="stop after T seconds")
    p.add_argument("--proto-dir", type=Path, default=REPO / "proto", help="where the .proto files are (default: the repository's proto/)")
    p.add_argument("--gen-dir", type=Path, default=HERE / "_generated", help="where the generated classes go")
    return p.parse_args(argv)


def scoped(namespace: str, subject: str) -> str:
    return f"{namespace}.{subject}" if namespace else subject


def stream_name(namespace: str) -> str:
    return f"{namespace}_{STREAM}" if namespace else STREAM


def token(value: str) -> str:
    """A code as the platform writes it in a subject token."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", value)
    return cleaned or "_"


# ---------------------------------------------------------------- counting


async def count(args: argparse.Namespace) -> int:
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from baladiya.intake.events.v1 import events_pb2

    connect = {"servers": args.nats.split(","), "name": "baladiya-analyst-example"}
    if args.creds:
        connect["user_credentials"] = args.creds
    elif args.user:
        connect.update(user=args.user, password=args.password or "")
    try:
        nc = await nats.connect(**connect, connect_timeout=5, max_reconnect_attempts=3)
    except Exception as e:  # noqa: BLE001 - any failure to connect ends the run with its reason
        log(f"cannot connect to NATS at {args.nats}: {e!r}")
        return 2

    subjects = [scoped(args.namespace, f"{SUBJECT}.{token(m)}.*") for m in args.municipality] or [
        scoped(args.namespace, f"{SUBJECT}.>")
    ]
    config = ConsumerConfig()
    if len(subjects) > 1:
        config.filter_subjects = subjects
    if args.since:
        policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = args.since
    else:
        policy = DeliverPolicy.ALL if args.all else DeliverPolicy.NEW
    stream = stream_name(args.namespace)
    js = nc.jetstream()
    try:
        sub = await js.subscribe(subjects[0], stream=stream, ordered_consumer=True,
                                 deliver_policy=policy, config=config)
    except Exception as e:  # noqa: BLE001
        log(f"cannot read stream {stream} (is the platform running, with namespace {args.namespace!r}?): {e!r}")
        await nc.close()
        return 2
    start = f" from {args.since.isoformat()}" if args.since else (" from the start" if args.all else " from now")
    log(f"subscribed to {', '.join(subjects)} on stream {stream}{start}")

    counts: Counter[str] = Counter()
    seen = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.seconds if args.seconds is not None else None
    try:
        while args.max_events is None or seen < args.max_events:
            timeout = 1.0 if deadline is None else deadline - loop.time()
            if timeout <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                continue
            headers = msg.headers or {}
            if headers.get("ce-type") != CE_TYPE or headers.get("ce-dataschema") != DATASCHEMA:
                log(f"skipped a message on {msg.subject}: ce-type {headers.get('ce-type')!r}")
                continue
            event = events_pb2.ReportReceived()
            event.ParseFromString(msg.data)
            seen += 1
            counts[event.municipality_code] += 1
            print(f"{event.municipality_code} {counts[event.municipality_code]}", flush=True)
    finally:
        try:
            await sub.unsubscribe()
        finally:
            await nc.close()
    summary = ", ".join(f"{m} {n}" for m, n in sorted(counts.items())) or "none"
    log(f"{seen} report(s) received: {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    generate(args.proto_dir.resolve(), args.gen_dir.resolve())
    sys.path.insert(0, str(args.gen_dir.resolve()))
    try:
        return asyncio.run(count(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
