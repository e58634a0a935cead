"""bjoern with N processes, the pattern from bjoern's README: listen() once,
fork N-1 times, then run() in every process (all share the one listening socket)."""

import os

import bjoern
from _common import load_app, parse_args


def main() -> None:
    args = parse_args(__doc__)
    bjoern.listen(load_app(args.app), args.host, args.port)
    for _ in range(args.processes - 1):
        if os.fork() == 0:  # child: stop forking, go serve
            break
    bjoern.run()


if __name__ == "__main__":
    main()
