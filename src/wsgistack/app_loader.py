"""Loading the WSGI callable from `--module pkg.mod[:callable]` or `--wsgi-file PATH`, and those of --mount.

Runs in each worker after fork, so a reload imports fresh code. Failures become a
ConfigError naming the option and the value; the traceback goes to the error log.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import re
import site
import sys
import traceback
from typing import Callable

from wsgistack.config import Config, ConfigError
from wsgistack.mounts import MountedApps, mountpoints


def prepare_import_path(config: Config) -> None:
    """Make the app importable the way uWSGI does: the working directory and --pythonpath first, then the
    virtualenv of --home, then the rest."""
    if config.home:
        _add_virtualenv(config)
    for entry in reversed([os.getcwd(), *pythonpath_entries(config.pythonpath)]):
        path = os.path.abspath(entry)
        if path not in sys.path:
            sys.path.insert(0, path)


def pythonpath_entries(values: list[str]) -> list[str]:
    """uWSGI's "directory (or glob)": each --pythonpath value is replaced by its matches, sorted; a value matching
    nothing is kept as given, as a missing directory is (it may appear later; Python skips it meanwhile)."""
    return [path for value in values for path in (sorted(glob.glob(value)) or [value])]


def _add_virtualenv(config: Config) -> None:
    """--home: uWSGI makes the virtualenv its interpreter's home; wsgistack runs in its own interpreter, so the
    virtualenv's site-packages (with its .pth files) go to the front of sys.path, where the app's versions of
    its dependencies win. The virtualenv must be of this Python version: compiled packages would not load."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = os.path.join(os.path.abspath(config.home), "lib", version, "site-packages")
    if not os.path.isdir(site_packages):
        raise ConfigError(f"{config.home!r} has no lib/{version}/site-packages: not a virtualenv of this Python "
                          f"({sys.version.split()[0]})", option="home", **config.where("home"))
    before = list(sys.path)
    site.addsitedir(site_packages)
    sys.path[:] = [entry for entry in sys.path if entry not in before] + before


def choose_app_source(config: Config) -> tuple[str, str, str | None]:
    """Return (option, value, note): which app is served and, when two are named, why."""
    if config.module and config.wsgi_file:
        if not os.path.exists(config.wsgi_file):
            return ("module", config.module,
                    f"warning: wsgi-file {config.wsgi_file!r} does not exist; serving module {config.module!r}")
        return ("module", config.module,
                f"both wsgi-file and module are set; serving module {config.module!r} (module wins, as in uWSGI)")
    if config.module:
        return ("module", config.module, None)
    return ("wsgi-file", config.wsgi_file, None)


def load_app(config: Config) -> Callable:
    """The app to serve: the main one, or the --mount dispatcher over the mounted ones (and the main one)."""
    set_app_argv(config)
    main = _load(config, *choose_app_source(config)[:2]) if config.module or config.wsgi_file else None
    if not config.mount:
        assert main is not None       # load_config refuses a config with no app
        return main
    apps = [(mountpoint, _load(config, "mount", app, where)) for mountpoint, app, where in mountpoints(config)]
    return MountedApps(apps, main, config.manage_script_name)


def set_app_argv(config: Config) -> None:
    """--pyargv: the app's sys.argv, as uWSGI sets it: the program's name, then the value split at whitespace.
    Only a worker's (load_app runs after fork): the master keeps its own for reloads."""
    if config.pyargv:
        sys.argv = [sys.argv[0] if sys.argv else "wsgistack", *config.pyargv.split()]


def _load(config: Config, option: str, value: str, where: dict | None = None) -> Callable:
    """`value` is a .py file (--wsgi-file, or --mount's ending in .py) or pkg.mod[:callable]."""
    where = config.where(option) if where is None else where
    if option == "mount":
        option = "wsgi-file" if value.endswith(".py") else "module"
        error_option = "mount"
    else:
        error_option = option
    module_name, _, callable_name = value.partition(":")
    callable_name = callable_name or config.callable
    try:
        if option == "module":
            module = importlib.import_module(module_name)
        else:
            module = _load_file(value)
    except ConfigError as exc:
        raise ConfigError(exc.message, option=error_option, **where) from None
    except BaseException as exc:  # the app's own import may raise anything, even SystemExit
        traceback.print_exc(file=sys.stderr)
        kind = "cannot import" if isinstance(exc, ImportError) else "error while loading"
        raise ConfigError(f"{kind} {value!r}: {type(exc).__name__}: {exc}", option=error_option, **where) from None
    app = getattr(module, callable_name, None)
    if app is None:
        raise ConfigError(f"{value!r} has no callable {callable_name!r}", option=error_option, **where)
    if not callable(app):
        raise ConfigError(f"{value}:{callable_name} is a {type(app).__name__}, not a callable", option=error_option,
                          **where)
    return app


def _load_file(path: str):
    if not os.path.isfile(path):
        what = "a directory, not a Python file" if os.path.isdir(path) else "no such file"
        raise ConfigError(f"{what}: {path!r}", option="wsgi-file")
    # A stable module name per file, like uWSGI's uwsgi_file_<path>.
    name = "wsgistack_file_" + re.sub(r"\W", "_", os.path.abspath(path))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {path!r} as Python", option="wsgi-file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
