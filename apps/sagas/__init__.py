"""Sagas: work across aggregates that can't share a transaction, undone in reverse on failure."""
