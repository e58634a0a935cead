"""Process titles (`ps`, `top`): `[PREFIX]wsgistack master` and `[PREFIX]wsgistack worker N`."""

from __future__ import annotations


def set_title(config, role: str) -> None:
    """--procname-prefix is put as written; --procname-prefix-spaced (as uWSGI) with a space after it."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    prefix = f"{config.procname_prefix_spaced} " if config.procname_prefix_spaced else config.procname_prefix
    setproctitle(f"{prefix}wsgistack {role}")
