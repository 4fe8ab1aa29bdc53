"""``python -m novita_async``: the ``novita-async`` command."""

from __future__ import annotations

from ._cli import command

if __name__ == "__main__":
    command()
