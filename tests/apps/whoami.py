"""An app that imports nothing beyond `os` (already loaded by the server), so that a worker running as
`nobody` can load it even where the interpreter's own library is not readable by that user."""

import os


def application(environ, start_response):
    body = f"pid={os.getpid()} uid={os.getuid()} gid={os.getgid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
