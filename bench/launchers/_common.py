"""Shared bits of the launcher scripts: argument parsing and loading the app file."""

import argparse
import importlib.util
import sys


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--app", required=True, help="path/to/file.py[:callable], callable defaults to 'application'")
    return parser.parse_args()


def load_app(spec: str):
    path, _, attr = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bench_app", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["bench_app"] = module
    module_spec.loader.exec_module(module)
    return getattr(module, attr or "application")
