"""VCB's short options per tool, and taking ``-p PASSWORD`` out of a command line.

Pure functions of argv: :mod:`vcbproxy.compat.vcb` parses the flags with these option
strings, :mod:`vcbproxy.compat.console` takes the password out with them before it
re-executes itself.
"""

from __future__ import annotations

# getopt option strings: a letter followed by ':' takes a value.
SHORTOPTS = {
    "vcbMounter": "h:u:p:a:r:t:m:M:F:L:U:",
    "vcbVmName": "h:u:p:s:L:",
    "vcbSnapshot": "h:u:p:c:d:f:l:L:",
    "vcbCleanup": "h:u:p:r:yL:",
    "vcbRestore": "h:u:p:s:b:L:",
    # The pre-/post-command take only the VM; a -p given to them is still kept out of argv.
    "pre-command": "p:",
    "post-command": "p:",
}


def _takes_value(shortopts: str) -> set[str]:
    return {c for i, c in enumerate(shortopts) if c != ":" and shortopts[i + 1 : i + 2] == ":"}


def without_password(tool: str, args: list[str]) -> tuple[list[str], str | None]:
    """``args`` without any ``-p PASSWORD`` (or ``-pPASSWORD``, or ``-yp PASSWORD``), and the
    last password given, or None.

    Reads the arguments as ``getopt.gnu_getopt`` will: an option that takes a value takes
    the rest of its token or the next argument, so ``-a name:-p`` keeps its selector, and
    nothing after ``--`` is an option. A ``-p`` with no value is left for getopt to refuse.
    """
    takes = _takes_value(SHORTOPTS.get(tool, "p:"))
    out: list[str] = []
    password: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out += args[i:]
            break
        if not arg.startswith("-") or arg == "-" or arg.startswith("--"):
            out.append(arg)
            i += 1
            continue
        kept, value_token = "", []
        letters = arg[1:]
        for pos, letter in enumerate(letters):
            if letter not in takes:
                kept += letter
                continue
            value: str | None = letters[pos + 1 :]
            if not value:
                value = args[i + 1] if i + 1 < len(args) else None
                i += value is not None
            if letter == "p" and value is not None:
                password = value
            else:
                kept += letter
                value_token = [] if value is None else [value]
            break
        if kept:
            out += ["-" + kept, *value_token]
        i += 1
    return out, password
