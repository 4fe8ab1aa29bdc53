"""Reliability suite: chaos runs, crash and resume, bad input, credential hygiene.

The harness modules (``checks``, ``chaos``, ``crashes``) are shared with ``scripts/reliability.py``,
which runs the same checks at full scale and records the figures in ``RELIABILITY.md``.
"""
