"""--mount: several apps in one server, each under its URL prefix (uWSGI's mountpoints).

The longest mountpoint that is a whole-segment prefix of the path chooses the app (/app is not /application).
With --manage-script-name the mountpoint moves from PATH_INFO to SCRIPT_NAME, as the app expects behind a
proxy that passes the whole path; without it the web server says where the app is mounted (nginx's
`uwsgi_param SCRIPT_NAME /app;`) and SCRIPT_NAME alone chooses. A request no mountpoint takes goes to the
main app (--module, --wsgi-file) or, without one, gets 404.
"""

from __future__ import annotations

from typing import Callable

from wsgistack.config import Config, ConfigError

NOT_FOUND = b"404 Not Found: no application is mounted here\n"


def mountpoints(config: Config) -> list[tuple[str, str, dict]]:
    """(mountpoint, app, where it was set) of each --mount, checked (ConfigError names the option, file and line)."""
    mounts = []
    for value in config.mount:
        mountpoint, equals, app = value.partition("=")
        where = config.where("mount", value)
        if not equals or not app:
            raise ConfigError(f"expected MOUNTPOINT=APP, got {value!r}", option="mount", **where)
        if not mountpoint.startswith("/"):
            raise ConfigError(f"the mountpoint must start with '/', got {mountpoint!r}", option="mount", **where)
        mounts.append((mountpoint.rstrip("/"), app, where))
    return mounts


class MountedApps:
    def __init__(self, apps: list[tuple[str, Callable]], main: Callable | None, manage_script_name: bool):
        self.apps = sorted(apps, key=lambda pair: len(pair[0]), reverse=True)     # the longest first
        self.main = main
        self.manage_script_name = manage_script_name

    def __call__(self, environ, start_response):
        if self.manage_script_name:
            path = environ.get("PATH_INFO", "")
            for mountpoint, app in self.apps:
                if path.startswith(mountpoint) and path[len(mountpoint):len(mountpoint) + 1] in ("", "/"):
                    environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + mountpoint
                    environ["PATH_INFO"] = path[len(mountpoint):]
                    return app(environ, start_response)
        else:
            script_name = environ.get("SCRIPT_NAME", "").rstrip("/")
            for mountpoint, app in self.apps:
                if script_name == mountpoint:
                    return app(environ, start_response)
        if self.main is not None:
            return self.main(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(NOT_FOUND)))])
        return [NOT_FOUND]
