"""Request paths as nginx resolves them: "." and ".." segments, merged slashes (RFC 3986, 5.2.4)."""

from __future__ import annotations


def normalize_path(path: str) -> str | None:
    """Resolve "." and ".." segments and merge slashes (RFC 3986 5.2.4, as nginx); None if it climbs above /."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if not segments:
                return None
            segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    trailing = "/" if segments and (path.endswith("/") or path.endswith("/.") or path.endswith("/..")) else ""
    return "/" + "/".join(segments) + trailing
