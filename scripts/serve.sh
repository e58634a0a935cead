#!/usr/bin/env bash
# The main job: set up (virtualenv, dependencies, the demo site's database), then serve the
# Django demo site on http://127.0.0.1:8000 with wsgistack, from the demo's uwsgi.ini.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
make_venv demo
cd "$ROOT/examples/mmcsite"
"$VENV/bin/python" manage.py migrate --noinput -v0
exec "$VENV/bin/wsgistack" --ini uwsgi.ini "$@"
