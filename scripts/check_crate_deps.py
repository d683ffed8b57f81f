#!/usr/bin/env python3
"""Fails when a crate depends on a service crate it should not (`make lint`).

    python3 scripts/check_crate_deps.py

Service crates stand on the platform, the protos and pure domain crates only;
only the crates that wire services together (the `server` binary, `bench` and
`tests`) may depend on a service crate. A service that needs another's data
reads its events or calls its gRPC API (through `proto`); a service that
needs another's domain types and rules shares them through a pure domain
crate (as `partners` and `sla-watcher` share `agreements`).

Every dependency kind counts (normal, dev, build). Every workspace crate must
be named in one of the groups below, so a new crate is placed on purpose.
Reads `cargo metadata --format-version 1 --no-deps`; python3 stdlib only.
Prints each offending edge and exits 1; exits 0 when there is none.
"""

from __future__ import annotations

import json
import subprocess
import sys

PREFIX = "baladiya-"

# Services: each owns a schema and its events; mounted by `server`.
SERVICES = {"intake", "routing", "sla-watcher", "licensing", "kpi", "partners", "open311"}
# What every service stands on.
FOUNDATION = {"platform", "proto"}
# Pure domain crates: types, rules and conversions; no IO, no async.
PURE = {"worktime", "agreements"}
# What the integration tests and the bench share (the platform as a child
# process, tokens, clean-up): no service crate.
HARNESS = {"testkit"}
# May depend on anything: they wire or exercise the services.
WIRING = {"server", "bench", "tests"}

# What each group may depend on, within the workspace.
ALLOWED = {
    "service": FOUNDATION | PURE,
    "foundation": FOUNDATION | PURE,
    "pure": FOUNDATION | PURE,
    "harness": FOUNDATION | PURE | HARNESS,
    "wiring": None,  # anything
}

# Edges (crate, dependency) allowed against the rules above, each with its
# reason. None today. `open311` is an in-process adapter over intake, but
# through intake's gRPC client in `proto`, not the intake crate, so it needs
# no entry; were it to depend on the intake crate, the edge would go here,
# ("open311", "intake"), with the reason.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def group_of(name: str) -> str | None:
    for group, members in (
        ("service", SERVICES),
        ("foundation", FOUNDATION),
        ("pure", PURE),
        ("harness", HARNESS),
        ("wiring", WIRING),
    ):
        if name in members:
            return group
    return None


def short(package: str) -> str:
    return package.removeprefix(PREFIX)


def problems(metadata: dict) -> list[str]:
    members = set(metadata["workspace_members"])
    packages = [p for p in metadata["packages"] if p["id"] in members]
    names = {p["name"] for p in packages}
    out = []
    for p in sorted(packages, key=lambda p: p["name"]):
        crate = short(p["name"])
        group = group_of(crate)
        if group is None:
            out.append(
                f"{p['name']}: not in any group of scripts/check_crate_deps.py "
                "(service, foundation, pure, harness, wiring); add it to one"
            )
            continue
        allowed = ALLOWED[group]
        for d in sorted(p["dependencies"], key=lambda d: d["name"]):
            if d["name"] not in names:
                continue  # not a workspace crate
            dep = short(d["name"])
            if allowed is None or dep in allowed or (crate, dep) in EXCEPTIONS:
                continue
            kind = d["kind"] or "normal"
            if dep in SERVICES:
                why = (
                    f"only {', '.join(sorted(WIRING))} may depend on a service crate "
                    f"({', '.join(sorted(SERVICES))})"
                )
            else:
                why = f"{group} crates may depend only on {', '.join(sorted(allowed))}"
            out.append(f"{p['name']} -> {d['name']} ({kind} dependency): {why}")
    return out


def main() -> int:
    try:
        text = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except subprocess.CalledProcessError as e:
        sys.stderr.write(e.stderr)
        print("check_crate_deps: cargo metadata failed", file=sys.stderr)
        return 2
    found = problems(json.loads(text))
    for line in found:
        print(f"check_crate_deps: {line}", file=sys.stderr)
    if found:
        print(
            f"check_crate_deps: {len(found)} dependenc{'y' if len(found) == 1 else 'ies'} "
            "against the crate rules (see scripts/check_crate_deps.py)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
