"""FastWSGI with N processes. fastwsgi.run(workers=N) forks N workers that each
bind the port with SO_REUSEPORT (its CLI has no --workers flag, hence this script).
With 1 process it serves in this process itself.

TCP_NODELAY is switched on: FastWSGI leaves Nagle on by default, which costs it
~5x under pipelining (each response waits for the delayed ACK); the benchmark
compares against its best setting."""

import fastwsgi
from _common import load_app, parse_args


def main() -> None:
    args = parse_args(__doc__)
    fastwsgi.server.tcp_nodelay = 1
    workers = args.processes if args.processes > 1 else None
    fastwsgi.run(load_app(args.app), host=args.host, port=args.port, workers=workers)


if __name__ == "__main__":
    main()
