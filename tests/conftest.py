"""Fixtures live in tests/fixtures/, one module per peer (lab, vcsim, sshd, ...)."""

pytest_plugins: list[str] = [
    "tests.fixtures.sshd",
    "tests.fixtures.lab",
    "tests.fixtures.vcsim",
    "tests.fixtures.govmomi",
    "tests.fixtures.endpoints",
    "tests.fixtures.bacula",
    "tests.fixtures.tools",
]
