# Shared body of scripts/vcbMounter, vcbVmName, vcbSnapshot, vcbCleanup, vcbRestore,
# pre-command and post-command: the console scripts of the same names (pre-command is
# vcbproxy-pre-command once installed), run from a clone. Sourced, not run, by a script
# that sets TOOL and passes its arguments:
#   . "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/vcb-wrapper.sh" "$@"
# Works from a fresh clone and when a backup daemon runs it as another user: it finds the
# repository from its own path and uses the repository's virtualenv (created on first use).
# Sourced, and exec'd at the end, so no second shell holds "-p PASSWORD" in its argv; Python
# then moves the password into the environment and re-executes itself without it
# (vcbproxy/compat/console.py).
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)"
PY="${VCBPROXY_VENV:-$ROOT/.venv}/bin/python"
if [ ! -x "$PY" ]; then
    . "$ROOT/scripts/lib/setup.sh"
    venv_need test >&2
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m vcbproxy.compat "$TOOL" "$@"
