"""The CBT backup repository: per-VM chains of runs (a full, then incrementals)."""
