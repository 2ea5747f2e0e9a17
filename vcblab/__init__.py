"""vcblab: the simulated vCenter that vcbproxy's demo, tests and benchmarks run against.

A package of its own beside ``vcbproxy`` (as govmomi keeps ``simulator/`` beside ``govc/``):
the product never imports it, except the ``vcbproxy lab`` command group, lazily. See
``vcblab/README.md`` for what it simulates and what it does not.
"""
