"""Answers every request, whatever its method or target, with its environ's str values as JSON."""

import json


def application(environ, start_response):
    body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
