"""``python -m vcbproxy.compat TOOL ARGS...`` — what the scripts/ wrappers exec."""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) < 2:
        print(
            "usage: python -m vcbproxy.compat vcbMounter|vcbVmName|vcbSnapshot|vcbRestore|vcbCleanup|"
            "pre-command|post-command ARGS...",
            file=sys.stderr,
        )
        sys.exit(2)
    tool, args = sys.argv[1], sys.argv[2:]
    if tool in ("pre-command", "post-command"):
        from vcbproxy.compat import prepost

        sys.exit(prepost.run(tool, args))
    from vcbproxy.compat import vcb

    sys.exit(vcb.run(tool, args))


if __name__ == "__main__":
    main()
