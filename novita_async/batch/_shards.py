"""Shim (removed in Phase B): shards are in ``_options``."""

from ._options import SHARDS_FOLDER, Shard, shard_of

__all__ = ["SHARDS_FOLDER", "Shard", "shard_of"]
