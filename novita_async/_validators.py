"""Shim: the names of this module moved (removed in Phase B)."""

from ._models import FINITE, INTEGER, NUMBER, Validator, raising, refusing, setting

__all__ = ["FINITE", "INTEGER", "NUMBER", "Validator", "raising", "refusing", "setting"]
