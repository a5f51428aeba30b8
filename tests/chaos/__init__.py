"""The chaos suite: drive the real processes from outside, inject faults, then count."""
