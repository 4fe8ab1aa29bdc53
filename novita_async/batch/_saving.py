"""(Shim, removed in Phase B: see :mod:`._outputs`.)"""

from ._outputs import MIN_DOWNLOAD_ATTEMPTS, ImageSaver, SavedImages, file_digest

__all__ = ["MIN_DOWNLOAD_ATTEMPTS", "ImageSaver", "SavedImages", "file_digest"]
