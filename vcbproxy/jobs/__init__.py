"""The use cases: export (fullvm mount), unmount, snapshots, CBT backup, restore, verify."""
