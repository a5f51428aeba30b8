"""Backstop's benchmarks: ``make bench`` (``QUICK=1`` for a short smoke run)."""
