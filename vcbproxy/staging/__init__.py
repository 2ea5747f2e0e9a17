"""The staging directory: safe names, atomic files, manifest, VCB catalog, .vmx rewrite, locks.

Everything that turns a server-provided name into a path, or puts bytes under the
staging root, goes through this package, so names from vSphere never escape it.
"""
