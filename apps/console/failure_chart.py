"""Failures per minute over the last hour, as the geometry of a server-side SVG bar chart.

Two aggregate queries (failed delivery attempts and new dead letters, grouped by minute);
the template draws one bar per minute from the figures here, so the page needs no script.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from apps.resilience.models import Attempt, DeadLetter

MINUTES = 60
BAR_STEP = 10  # px per minute
BAR_WIDTH = 8
PLOT_TOP = 10  # room for the scale's label
PLOT_HEIGHT = 100
AXIS_HEIGHT = 20  # room for the time labels under the bars
WIDTH = MINUTES * BAR_STEP
HEIGHT = PLOT_TOP + PLOT_HEIGHT + AXIS_HEIGHT
BASELINE = PLOT_TOP + PLOT_HEIGHT


def minutes(now: datetime) -> list[datetime]:
    """Return the starts of the last hour's minutes, oldest first, ending with ``now``'s."""
    current = timezone.localtime(now).replace(second=0, microsecond=0)
    return [current - timedelta(minutes=MINUTES - 1 - i) for i in range(MINUTES)]


def per_minute(queryset: Any, field: str, since: datetime) -> dict[datetime, int]:
    """Return how many rows of ``queryset`` have ``field`` in each minute since ``since``."""
    rows = (
        queryset.filter(**{f"{field}__gte": since})
        .order_by()
        .annotate(minute=TruncMinute(field))
        .values("minute")
        .annotate(n=Count("pk"))
    )
    return {row["minute"]: row["n"] for row in rows}


def last_hour(now: datetime) -> dict[str, Any]:
    """Return the chart: one bucket per minute with its counts, bar geometry, label and the
    Attempt change list filtered to that minute, plus totals and the scale."""
    starts = minutes(now)
    attempts = per_minute(Attempt.objects.all(), "at", starts[0])
    letters = per_minute(DeadLetter.objects.all(), "first_failed_at", starts[0])
    peak = max([*attempts.values(), *letters.values(), 1])
    buckets = [
        _bucket(i, start, attempts.get(start, 0), letters.get(start, 0), peak)
        for i, start in enumerate(starts)
    ]
    return {
        "buckets": buckets,
        "attempts": sum(attempts.values()),
        "dead_letters": sum(letters.values()),
        "peak": peak,
        "width": WIDTH,
        "height": HEIGHT,
        "baseline": BASELINE,
        "plot_top": PLOT_TOP,
        "bar_width": BAR_WIDTH,
        "letters_width": BAR_WIDTH / 2,
        "ticks": [_tick(i, starts[i]) for i in range(0, MINUTES, 15)],
    }


def _bucket(i: int, start: datetime, attempts: int, letters: int, peak: int) -> dict[str, Any]:
    attempts_height = _height(attempts, peak)
    letters_height = _height(letters, peak)
    label = f"{start:%H:%M}: {attempts} failed attempt(s), {letters} dead letter(s)"
    url = (
        reverse("admin:resilience_attempt_changelist")
        + "?"
        + urlencode(
            {"at__gte": start.isoformat(), "at__lt": (start + timedelta(minutes=1)).isoformat()}
        )
    )
    return {
        "minute": f"{start:%H:%M}",
        "attempts": attempts,
        "dead_letters": letters,
        "x": i * BAR_STEP + (BAR_STEP - BAR_WIDTH) / 2,
        "letters_x": i * BAR_STEP + BAR_STEP / 2 - BAR_WIDTH / 4,
        "attempts_height": attempts_height,
        "attempts_y": BASELINE - attempts_height,
        "letters_height": letters_height,
        "letters_y": BASELINE - letters_height,
        "label": label,
        "url": url,
    }


def _height(count: int, peak: int) -> float:
    return round(count * PLOT_HEIGHT / peak, 1)


def _tick(i: int, start: datetime) -> dict[str, Any]:
    return {"x": i * BAR_STEP, "label": f"{start:%H:%M}"}
