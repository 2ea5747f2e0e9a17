"""Placeholder until the lab CLI lands."""

import click


@click.group()
def lab() -> None:
    """The embedded simulated vCenter (for the demo and the tests)."""
