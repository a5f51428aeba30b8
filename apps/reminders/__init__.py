"""Reminders: scheduled per todo, fired by a beat sweep that claims due ones exactly once."""
