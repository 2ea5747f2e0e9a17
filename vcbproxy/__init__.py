"""vcbproxy: a VMware Consolidated Backup style backup proxy for vSphere."""

__version__ = "0.1.0"
