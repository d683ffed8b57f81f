"""examples/analyst/count_by_municipality.py against the running platform:
reports submitted over gRPC come out as counts per municipality, replayed from
a time and live."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, submit_report, utcnow

EXAMPLE = ROOT / "examples" / "analyst" / "count_by_municipality.py"
LINE = re.compile(r"^([A-Z0-9_-]+) (\d+)$")


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("analyst-gen")


def command(platform, gen_dir: Path, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLE), "--nats", platform.nats_url, "--namespace", platform.namespace,
            "--gen-dir", str(gen_dir), *args]


def counts(stdout: str) -> Counter:
    """The final count per municipality, checking every line is `CODE N` and
    that each municipality's counts go up one at a time."""
    last: Counter = Counter()
    for line in stdout.splitlines():
        m = LINE.match(line)
        assert m, f"not a `MUNICIPALITY COUNT` line: {line!r}"
        code, n = m.group(1), int(m.group(2))
        assert n == last[code] + 1, f"{code} went from {last[code]} to {n}"
        last[code] = n
    return last


def submit(platform, plan: list[str]) -> Counter:
    for municipality in plan:
        response = submit_report(platform, municipality)
        assert response.report.municipality_code == municipality
        assert not response.linked_as_duplicate
    return Counter(plan)


def test_replay_from_a_time_counts_what_was_submitted(platform, protos, gen_dir):
    platform.settle()
    since = utcnow()
    time.sleep(0.01)
    expected = submit(platform, ["MAKKAH", "MADINAH", "MAKKAH", "MAKKAH", "MADINAH"])
    done = subprocess.run(
        command(platform, gen_dir, "--since", since.isoformat(), "--max-events", str(sum(expected.values())),
                "--seconds", "60"),
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert counts(done.stdout) == expected, f"{done.stdout}\n{done.stderr}"
    assert f"on stream {platform.stream('INTAKE')} from {since.isoformat()}" in done.stderr


def test_live_count_of_chosen_municipalities(platform, protos, gen_dir, tmp_path):
    platform.settle()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        example = subprocess.Popen(
            command(platform, gen_dir, "--municipality", "RIYADH", "--municipality", "JEDDAH",
                    "--max-events", "4", "--seconds", "60"),
            stdout=stdout, stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 60
            while "subscribed to" not in err.read_text():
                assert example.poll() is None, err.read_text()
                assert time.monotonic() < deadline, f"the example did not subscribe: {err.read_text()}"
                time.sleep(0.1)
            # Muscat first: filtered out on the server, it must not count.
            submit(platform, ["MUSCAT"])
            expected = submit(platform, ["RIYADH", "JEDDAH", "JEDDAH", "RIYADH"])
            assert example.wait(timeout=90) == 0, err.read_text()
        finally:
            if example.poll() is None:
                example.kill()
                example.wait()
    assert counts(out.read_text()) == expected, f"{out.read_text()}\n{err.read_text()}"
    assert "4 report(s) received: JEDDAH 2, RIYADH 2" in err.read_text()


def test_stops_after_the_given_seconds_when_nothing_comes(platform, gen_dir):
    platform.settle()
    started = time.monotonic()
    done = subprocess.run(command(platform, gen_dir, "--seconds", "1.5"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert 1.5 <= time.monotonic() - started < 30
    assert "0 report(s) received: none" in done.stderr


def test_a_namespace_without_the_stream_is_refused_with_the_reason(platform, gen_dir):
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--nats", platform.nats_url, "--namespace", "no-such-namespace",
         "--gen-dir", str(gen_dir), "--seconds", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "cannot read stream no-such-namespace_INTAKE" in done.stderr, done.stderr
