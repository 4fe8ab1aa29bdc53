"""Tests of the client (issue 2)."""
