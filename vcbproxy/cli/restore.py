"""``vcbproxy restore`` — put an exported VM back into vSphere (vcbRestore)."""

from __future__ import annotations

import click

from vcbproxy import errors


@click.command("restore")
def restore():
    """Restore an export as a VM (being written)."""
    raise errors.UnsupportedError("restore is not available yet")
