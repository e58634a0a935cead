"""Self-setup: Debian packages (wrk, libev-dev; nginx for the nginx scenario), the
bench/.venv virtualenv, the peers, matplotlib, Django (nginx scenario) and wsgistack
itself (editable). Each install is separate so
one failure only takes out the server that needs it; failures are returned as
reasons for the report, never raised."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .nginx import NGINX
from .paths import REPO, VENV, venv_python

# PyPI requirement per distribution (what the report and the server table call it).
PEERS = {
    "fastwsgi": "fastwsgi",
    "bjoern": "bjoern",
    "granian": "granian",
    "uwsgi": "uwsgi",
    "gunicorn": "gunicorn",
}
TOOLS = {
    "matplotlib": "matplotlib",
    # fastwsgi imports pkg_resources, which newer setuptools no longer ship
    "setuptools": "setuptools<81",
}
# Debian package -> how to tell it is already there
APT = {
    "wrk": lambda: shutil.which("wrk") is not None,
    "libev-dev": lambda: Path("/usr/include/ev.h").exists(),  # bjoern builds against it
}
# Only for the nginx scenario. Installing Debian's nginx may also start its packaged service (port 80).
NGINX_APT = {"nginx": lambda: Path(NGINX).exists()}
NGINX_PIP = {"django": "Django>=4.2"}  # as the project's `demo` extra
STAMP = VENV / ".wsgistack-install.sha256"


@dataclass
class Provision:
    versions: dict[str, str] = field(default_factory=dict)  # dist -> version, installed ones
    errors: dict[str, str] = field(default_factory=dict)  # dist or tool -> why it is missing
    log: list[str] = field(default_factory=list)


def _run(argv: list[str], log: list[str]) -> tuple[bool, str]:
    log.append("$ " + " ".join(argv))
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc.returncode == 0, proc.stdout


def _short(output: str, lines: int = 6) -> str:
    keep = [line for line in output.strip().splitlines() if line.strip()]
    return "\n".join(keep[-lines:])


def ensure_apt(p: Provision, packages: dict) -> None:
    missing = [pkg for pkg, present in packages.items() if not present()]
    if not missing:
        return
    if os.geteuid() != 0:
        for pkg in missing:
            p.errors[pkg] = f"Debian package {pkg} missing and not root to install it (apt-get install {pkg})"
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for pkg in missing:
        p.log.append(f"$ apt-get install -y {pkg}")
        proc = subprocess.run(["apt-get", "install", "-y", "-qq", pkg], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or not packages[pkg]():
            p.errors[pkg] = f"apt-get install {pkg} failed:\n{_short(proc.stdout)}"


def ensure_venv(p: Provision) -> bool:
    if Path(venv_python()).exists():
        return True
    ok, out = _run([sys.executable, "-m", "venv", str(VENV)], p.log)
    if ok:
        ok, out = _run([venv_python(), "-m", "pip", "install", "-q", "--upgrade", "pip"], p.log)
    if not ok:
        p.errors["venv"] = f"cannot create {VENV}:\n{_short(out)}"
    return ok


def installed_versions() -> dict[str, str]:
    code = ("import json, importlib.metadata as m\n"
            "print(json.dumps({(d.metadata['Name'] or '').lower(): d.version for d in m.distributions()}))")
    proc = subprocess.run([venv_python(), "-c", code], stdout=subprocess.PIPE, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def ensure_pip_packages(p: Provision, packages: dict[str, str]) -> None:
    have = installed_versions()
    for dist, requirement in packages.items():
        if dist in have and (dist != "setuptools" or _has_pkg_resources()):
            continue
        ok, out = _run([venv_python(), "-m", "pip", "install", "-q", requirement], p.log)
        if not ok:
            p.errors[dist] = f"pip install {requirement} failed:\n{_short(out)}"


def _has_pkg_resources() -> bool:
    return subprocess.run([venv_python(), "-c", "import pkg_resources"], stderr=subprocess.DEVNULL).returncode == 0


def _project_digest() -> str:
    return hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()


def ensure_project(p: Provision) -> None:
    """pip install -e the repo; redone only when pyproject.toml changed (code changes need nothing)."""
    digest = _project_digest()
    if STAMP.exists() and STAMP.read_text() == digest and "wsgistack" in installed_versions():
        return
    ok, out = _run([venv_python(), "-m", "pip", "install", "-q", "-e", str(REPO)], p.log)
    if ok:
        STAMP.write_text(digest)
    else:
        p.errors["wsgistack"] = f"pip install -e {REPO} failed:\n{_short(out)}"


def provision(skip: bool = False, nginx: bool = False) -> Provision:
    """Everything the run needs; `nginx`: also what the nginx scenario needs (nginx, Django)."""
    p = Provision()
    if not skip:
        ensure_apt(p, {**APT, **(NGINX_APT if nginx else {})})
        if not ensure_venv(p):
            return p
        ensure_pip_packages(p, {**TOOLS, **PEERS, **(NGINX_PIP if nginx else {})})
        ensure_project(p)
    p.versions = installed_versions()
    return p


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    except OSError:
        return "missing"
    return out.splitlines()[0].split(" Copyright")[0] if out else "unknown"
