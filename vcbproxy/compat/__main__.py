"""``python -m vcbproxy.compat TOOL ARGS...`` — what the scripts/ wrappers exec.

The same tools as the console scripts (:mod:`vcbproxy.compat.console`), with the same
``-p PASSWORD`` handling: the password goes into the environment and the process
re-executes itself without it.
"""

from __future__ import annotations

import sys

from vcbproxy.compat.console import password_out_of_argv, run
from vcbproxy.compat.flags import SHORTOPTS


def main() -> None:
    if len(sys.argv) < 2:
        print(
            "usage: python -m vcbproxy.compat vcbMounter|vcbVmName|vcbSnapshot|vcbRestore|vcbCleanup|"
            "pre-command|post-command ARGS...",
            file=sys.stderr,
        )
        sys.exit(2)
    tool, args = sys.argv[1], sys.argv[2:]
    if tool in SHORTOPTS:
        password_out_of_argv(tool, args, head=[tool])
    sys.exit(run(tool, args))


if __name__ == "__main__":
    main()
