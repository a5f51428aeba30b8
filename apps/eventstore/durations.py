"""Short human-readable ages for the admin console ("42 s", "3 h 5 min")."""

from __future__ import annotations


def age_text(seconds: float | None) -> str:
    """Return ``seconds`` as a short age in its two largest units, or "—" for ``None``."""
    if seconds is None:
        return "—"
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {secs} s" if minutes < 10 and secs else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")
