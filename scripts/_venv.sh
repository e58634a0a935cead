# Sourced by serve.sh and test.sh: a project virtualenv in .venv with wsgistack installed (editable).
# On a fresh Debian, python3 has no venv module until python3-venv is installed (root only).
ROOT="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="$ROOT/.venv"
apt_install() {   # apt_install PACKAGE... : install what is missing, when we may
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing Debian packages: ${missing[*]}" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "note: not root, cannot install ${missing[*]}" >&2
    fi
}
make_venv() {   # make_venv EXTRAS : one setup at a time (serve.sh and test.sh at once would remake each other's)
    local status=0
    exec 9>"$ROOT/.venv.lock"
    flock 9
    _make_venv "$1" || status=$?
    exec 9>&-                         # not held by the server serve.sh becomes
    return $status
}
_make_venv() {
    # Installed already, from this checkout and this pyproject.toml: nothing to fetch (a re-run works offline).
    local stamp="$VENV/.installed-$1" want other
    want="$ROOT $(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$VENV/bin/python" -c "import wsgistack" 2>/dev/null; then
        return 0
    fi
    # None yet; one a Ctrl-C cut short; or one made for another directory (a copied or moved checkout: a venv's
    # scripts name its own path, so it cannot move)
    if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1 \
            || [[ "$(head -n 1 "$VENV/bin/pip" 2>/dev/null)" != "#!$VENV/bin/python"* ]]; then
        rm -rf "$VENV"
        python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; rm -rf "$VENV"; python3 -m venv "$VENV"; } \
            || return 1
    fi
    for other in "$VENV"/.installed-*; do   # another checkout's or an older pyproject.toml's: not valid any more
        [ "$(cat "$other" 2>/dev/null)" = "$want" ] || rm -f "$other"
    done
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$1]" || return 1
    echo "$want" > "$stamp"               # last: a setup cut short is done again
}
