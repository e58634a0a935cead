"""Protocol codecs and the connection classes that speak them, one per listen option."""

from __future__ import annotations


def connection_class(protocol: str):
    """The asyncio protocol class for sockets of `protocol` ("http", "uwsgi" or "fastcgi")."""
    if protocol == "http":
        from wsgistack.protocols.http import HttpConnection
        return HttpConnection
    if protocol == "uwsgi":
        from wsgistack.protocols.uwsgi import UwsgiConnection
        return UwsgiConnection
    if protocol == "fastcgi":
        from wsgistack.protocols.fastcgi import FastCGIConnection
        return FastCGIConnection
    raise ValueError(f"unknown protocol {protocol!r}")
