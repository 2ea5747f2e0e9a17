# Shared by scripts/demo, scripts/test and scripts/bench: install what vcbproxy needs on a
# fresh Debian machine, idempotently and quickly on a machine that already has it.
# Sourced, not run. Sets VENV and PY.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VCBPROXY_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

log() { printf '%s\n' "[setup] $*" >&2; }

# apt_need PKG... : install the Debian packages that are not installed yet.
apt_need() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "apt-get install ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# venv_need EXTRAS : a virtualenv with vcbproxy installed editable, plus the extras.
venv_need() {
    local extras="$1"
    if [ ! -x "$PY" ]; then
        apt_need python3-venv 2>/dev/null || true
        log "python3 -m venv $VENV"
        python3 -m venv "$VENV"
    fi
    local stamp="$VENV/.vcbproxy-$extras-$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha1sum | cut -c1-12)"
    if [ ! -e "$stamp" ]; then
        log "pip install -e .[$extras]"
        "$PY" -m pip install -q --upgrade pip >/dev/null
        "$PY" -m pip install -q -e "$ROOT[$extras]"
        touch "$stamp"
    fi
}
