# Sourced by bin/overlay and bin/test: find Python 3.11+, create .venv on first use,
# and (re)install the project whenever pyproject.toml changes.  Usage: _venv_ready runtime|test
_overlay_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OVERLAY_VENV="${OVERLAY_VENV:-$_overlay_root/.venv}"

_find_python() {
    local candidate
    for candidate in python3.14 python3.13 python3.12 python3.11 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

_venv_ready() {
    local extra="$1" python stamp want
    if [ ! -x "$OVERLAY_VENV/bin/python" ]; then
        python="$(_find_python)" || {
            echo "overlay: needs Python 3.11 or newer on PATH (found none)" >&2
            return 1
        }
        echo "overlay: creating $OVERLAY_VENV with $("$python" --version 2>&1) (first run only)" >&2
        "$python" -m venv "$OVERLAY_VENV" || {
            echo "overlay: could not create a virtual environment;" \
                "on Debian or Ubuntu install python3-venv" >&2
            return 1
        }
    fi
    stamp="$OVERLAY_VENV/.installed-$extra"
    want="$(cat "$_overlay_root/pyproject.toml" | cksum)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "overlay: installing dependencies into $OVERLAY_VENV ($extra)" >&2
        local target="$_overlay_root"
        [ "$extra" = runtime ] || target="$_overlay_root[$extra]"
        "$OVERLAY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            --editable "$target" >&2 || {
            echo "overlay: installing dependencies failed (see pip's message above)" >&2
            return 1
        }
        echo "$want" >"$stamp"
    fi
}
