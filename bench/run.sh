#!/usr/bin/env bash
# Thin wrapper: bash bench/run.sh [--quick] [other run.py options]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python3}" "$here/run.py" "$@"
