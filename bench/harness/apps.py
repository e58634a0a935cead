"""The WSGI apps the servers serve: the hello world (every scenario) and the project's
Django demo (the nginx scenario). An `App` says where its code is, so that each
server's argv can load it its own way (file, or directory + module)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .paths import APP_FILE, APPS, DJANGO_SITE, OUT, venv_python

DJANGO_DB = OUT / "mmcsite" / "db.sqlite3"  # a throwaway database, migrated before the scenario
DJANGO_SEED_VISITS = 10  # rows the page's query returns and its template loops over


@dataclass(frozen=True)
class App:
    key: str
    title: str
    directory: Path  # the working directory / import root
    module: str  # importable from `directory`; the callable is `application`
    file: Path | None = None  # where a server can load the app from a file (uWSGI-style --wsgi-file)
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the server process

    @property
    def target(self) -> str:
        """module:callable, as gunicorn and Granian take it."""
        return f"{self.module}:application"

    def uwsgi_args(self) -> list[str]:
        """How wsgistack and uWSGI (same flags) load it."""
        if self.file:
            return ["--wsgi-file", str(self.file)]
        return ["--chdir", str(self.directory), "--module", self.module]


HELLO = App("hello", "hello world", APPS, "hello", file=APP_FILE)
DJANGO = App("django", "Django page (template + SQLite query)", DJANGO_SITE, "mmcsite.wsgi",
             env={"DEMO_DB": str(DJANGO_DB), "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"})
APPS_BY_KEY = {app.key: app for app in (HELLO, DJANGO)}


def prepare(app: App) -> None:
    """Make the app servable: for Django a fresh database (migrate, then a few rows for the page's query).
    Raises RuntimeError with the command's output if that fails."""
    if app is not DJANGO:
        return
    DJANGO_DB.parent.mkdir(parents=True, exist_ok=True)
    DJANGO_DB.unlink(missing_ok=True)
    seed = ("from pages.models import Visit; "
            f"Visit.objects.bulk_create([Visit(path=f'/seed/{{i}}') for i in range({DJANGO_SEED_VISITS})])")
    for argv in (["migrate", "--noinput", "-v", "0"], ["shell", "-c", seed]):
        _manage(app, argv)


def _manage(app: App, argv: list[str]) -> None:
    proc = subprocess.run([venv_python(), "manage.py", *argv], cwd=app.directory, env={**os.environ, **app.env},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"manage.py {argv[0]} failed (status {proc.returncode}):\n{proc.stdout.strip()[-800:]}")
