"""Compatibility with VMware Consolidated Backup's tools and integration config.

Backup products written against VCB call ``vcbMounter``, ``vcbVmName``, ``vcbSnapshot``,
``vcbCleanup`` and a pre-/post-command pair with VCB's own flags, and read VCB's output
shapes. This package translates those calls onto the ``vcbproxy`` commands so such
scripts run unchanged:

* :mod:`vcbproxy.compat.config` reads VCB's integration config keys;
* :mod:`vcbproxy.compat.vcb` translates VCB argv into ``vcbproxy`` argv and runs it in-process;
* :mod:`vcbproxy.compat.prepost` is the pre-command/post-command pair backup products call.
"""
