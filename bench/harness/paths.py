"""Where things live. Everything is relative to this file, never hard-coded."""

import shlex
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
VENV = BENCH / ".venv"
OUT = BENCH / "out"
LOGS = OUT / "logs"
APPS = BENCH / "apps"
APP_FILE = APPS / "hello.py"
APP_MODULE = "hello:application"
DJANGO_SITE = REPO / "examples" / "mmcsite"  # the project's Django demo (the nginx scenario's second app)
LAUNCHERS = BENCH / "launchers"
PIPELINE_LUA = BENCH / "pipeline.lua"
RESULTS_MD = BENCH / "RESULTS.md"
RESULTS_PNG = BENCH / "results.png"
RESULTS_NGINX_PNG = BENCH / "results-nginx.png"
CHART_SCRIPT = BENCH / "chart.py"


def venv_bin(name: str) -> str:
    return str(VENV / "bin" / name)


def venv_python() -> str:
    return venv_bin("python")


def launcher(name: str) -> str:
    return str(LAUNCHERS / name)


def relative(argv: list) -> str:
    """A command line for the report: shell-quoted, paths relative to the repository."""
    return shlex.join(map(str, argv)).replace(str(REPO) + "/", "")
