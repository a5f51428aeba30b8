"""The ops API of the console: dead letters, their groups and escalations (staff only)."""
