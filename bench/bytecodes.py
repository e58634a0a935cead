"""Bytecodes executed per request, by function, for one of bench/hotpath.py's cases: a count, not a time.

Timings on a shared machine move by several percent between runs; the number of bytecodes (and, under
callgrind, of machine instructions) a request costs does not. Use it to see where our Python goes and to
compare before and after a change. Fewer bytecodes is not always less time (slicing, hashing and
allocation happen inside single bytecodes): confirm with hotpath.py.

    .venv/bin/python bench/bytecodes.py uwsgi            # http2 | http12 | uwsgi | fastcgi
    valgrind --tool=callgrind .venv/bin/python bench/bytecodes.py uwsgi --requests 3000 --no-trace
        # machine instructions: run with two --requests counts and divide the difference of the totals
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hotpath  # noqa: E402
from harness.load import BROWSER_HEADERS, MINIMAL_HEADERS  # noqa: E402

CASES = {
    "http2": lambda n: hotpath.time_http(hotpath.http_request(MINIMAL_HEADERS), n),
    "http12": lambda n: hotpath.time_http(hotpath.http_request(BROWSER_HEADERS), n),
    "uwsgi": hotpath.time_uwsgi,
    "fastcgi": hotpath.time_fastcgi,
}


def count_bytecodes(run, requests: int) -> Counter:
    counts: Counter = Counter()

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        if event == "opcode":
            code = frame.f_code
            counts[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
        return tracer

    sys.settrace(tracer)
    try:
        run(requests)
    finally:
        sys.settrace(None)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--top", type=int, default=30, help="functions to list (default 30)")
    parser.add_argument("--no-trace", action="store_true", help="only run the requests (for callgrind)")
    args = parser.parse_args()
    run = CASES[args.case]
    run(200)                                  # warm the caches (env keys, heads, status codes)
    if args.no_trace:
        run(args.requests)
        return
    counts = count_bytecodes(run, args.requests)
    print(f"{sum(counts.values()) / args.requests:.0f} bytecodes per request ({args.case})")
    for name, count in counts.most_common(args.top):
        print(f"{count / args.requests:8.0f}  {name}")


if __name__ == "__main__":
    main()
