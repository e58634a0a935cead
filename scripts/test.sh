#!/usr/bin/env bash
# The whole test suite: set up (Debian packages when root, virtualenv, dependencies), then pytest.
# Extra arguments go to pytest (e.g. -k keepalive).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
apt_install nginx curl wrk chromium
make_venv test
cd "$ROOT"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
