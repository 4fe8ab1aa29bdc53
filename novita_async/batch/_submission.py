from ._flow import DiskSpace  # (shim, removed in Phase B)

__all__ = ["DiskSpace"]
