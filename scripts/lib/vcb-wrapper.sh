# Shared body of scripts/vcbMounter, vcbVmName, vcbSnapshot, vcbCleanup, vcbRestore,
# pre-command and post-command. Sourced, not run, by a script that sets
#   TOOL         the vcbproxy.compat tool to run
#   VALUE_FLAGS  the one-letter options that take a value, as a bracket-expression body
# and passes its arguments: . "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/vcb-wrapper.sh" "$@"
# Sourced rather than exec'd so that "-p PASSWORD" is never in another process's argv.
# Works from a fresh clone and when a backup daemon runs it as another user: it finds the
# repository from its own path and uses the repository's virtualenv (created on first use).
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)"
PY="${VCBPROXY_VENV:-$ROOT/.venv}/bin/python"
if [ ! -x "$PY" ]; then
    . "$ROOT/scripts/lib/setup.sh"
    venv_need test >&2
fi
# VCB took "-p PASSWORD". Move it into the environment before exec, so the Python process
# (which lives as long as the backup) never shows it in ps; options that take a value are
# copied with their value so "-a name:-p" is not mistaken for a password.
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -p) if [ $# -lt 2 ]; then args+=("$1"); shift; continue; fi
            export VCBPROXY_PASSWORD="$2"; unset VCBPROXY_PASSWORD_FILE; shift 2 ;;
        -p?*) export VCBPROXY_PASSWORD="${1#-p}"; unset VCBPROXY_PASSWORD_FILE; shift ;;
        -[$VALUE_FLAGS]) args+=("$1"); if [ $# -gt 1 ]; then args+=("$2"); shift; fi; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m vcbproxy.compat "$TOOL" ${args[@]+"${args[@]}"}
