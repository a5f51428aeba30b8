"""Recurrence rules can't take a worker hostage: a todo repeats at most daily, and every
search for an occurrence does bounded work, looking at most ``HORIZON_YEARS`` ahead.

dateutil alone walks to year 9999 when a rule's filters never match (21 s of CPU for
``FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30``), even with UNTIL set. The wall-clock caps here
are generous correctness bounds (the searches take milliseconds), not performance targets.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from dateutil.relativedelta import relativedelta
from dateutil.rrule import rrulestr

from apps.eventstore.models import Event
from apps.eventstore.store import CommandContext
from apps.resilience.models import DeadLetter
from apps.todos import recurrence, rrules, services
from apps.todos.aggregates import Todo
from apps.todos.events import TodoCreated
from tests.support.api import Api
from tests.todos.test_recurrence import (
    HANDLER,
    complete,
    handled,
    next_of,
    parse,
    series_created,
)

# Generous: each of these searches takes milliseconds; unbounded, they take seconds.
BOUNDED = 2.0
TRAP = "FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30"
LEAP_DAY = "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29"
NEVER = [
    "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30",
    "FREQ=MONTHLY;BYMONTH=2;BYMONTHDAY=30",
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
    "FREQ=MONTHLY;BYMONTH=2;BYMONTHDAY=30;UNTIL=20310101T000000Z",
    "FREQ=MONTHLY;BYSETPOS=40",
    "FREQ=YEARLY;BYWEEKNO=53;BYMONTH=6",
]


def create(api: Api, rule: str, due_at: str = "2030-01-07T09:00:00Z") -> tuple[float, object]:
    """POST a recurring todo; return how long the API took and its response."""
    started = time.monotonic()
    response = api.post("todos/", {"title": "Water plants", "due_at": due_at, "recurrence": rule})
    return time.monotonic() - started, response


def refusal(response: object) -> str:
    """The message of a 400 naming ``recurrence`` only."""
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert (error["code"], list(error["fields"])) == ("invalid", ["recurrence"])
    [message] = error["fields"]["recurrence"]
    return message


# -- refused at once, with a message a user understands -------------------------------------


@pytest.mark.django_db
def test_the_year_9999_trap_is_refused_at_once(alice: Api) -> None:
    took, response = create(alice, TRAP)

    assert "at most daily" in refusal(response)
    assert took < BOUNDED
    assert not Event.objects.filter(type="todo.created").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("rule", NEVER)
def test_a_rule_that_never_matches_is_refused_after_bounded_work(alice: Api, rule: str) -> None:
    took, response = create(alice, rule)

    assert refusal(response) == (
        "This rule never repeats within 5 years (for example, February has no 30th)."
    )
    assert took < BOUNDED


@pytest.mark.django_db(transaction=True)
def test_a_bulk_request_full_of_traps_is_answered_at_once(alice: Api) -> None:
    """Two traps timed a worker out (a 500); a batch of them is now a quick 400."""
    items = [{"title": f"Trap {i}", "recurrence": rule} for i, rule in enumerate([TRAP, *NEVER])]

    started = time.monotonic()
    response = alice.post("todos/bulk/", {"mode": "atomic", "items": items})
    took = time.monotonic() - started

    assert response.status_code == 400, response.json()
    rows = response.json()["error"]["results"]
    assert [(row["status"], list(row["errors"])) for row in rows] == [
        ("invalid", ["recurrence"])
    ] * len(items)
    assert took < BOUNDED


@pytest.mark.django_db
@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=SECONDLY",
        "FREQ=MINUTELY;INTERVAL=30",
        "FREQ=HOURLY;INTERVAL=8",
        "FREQ=DAILY;BYHOUR=8,20",  # twice a day is sub-daily too
        "FREQ=WEEKLY;BYDAY=MO;BYMINUTE=0,30",
    ],
)
def test_a_todo_repeating_more_than_daily_is_refused_saying_so(alice: Api, rule: str) -> None:
    _, response = create(alice, rule)

    assert refusal(response).startswith("A todo can repeat at most daily")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ("nonsense", "'NONSENSE' is not a NAME=VALUE part; write the rule like FREQ=WEEKLY"),
        ("FREQ=DAILY;COLOUR=RED", "COLOUR is not a recurrence rule part"),
        ("INTERVAL=2", "The rule needs FREQ=DAILY, WEEKLY, MONTHLY or YEARLY."),
        ("FREQ=DAILY;FREQ=WEEKLY", "FREQ is given twice."),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY must list whole numbers from 1 to 31"),
        ("FREQ=YEARLY;BYMONTH=JAN", "BYMONTH must list whole numbers from 1 to 12."),
        ("FREQ=WEEKLY;BYDAY=MONDAY", "BYDAY must list weekdays (MO, TU, WE, TH, FR, SA, SU)"),
        ("FREQ=WEEKLY;BYDAY=1MO", "Numbered weekdays like 1MO need FREQ=MONTHLY or YEARLY."),
        (
            "FREQ=WEEKLY;BYMONTHDAY=1",
            "BYMONTHDAY can only be used with FREQ=DAILY, MONTHLY or YEARLY.",
        ),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL must be a whole number from 1 to 1825"),
        ("FREQ=YEARLY;INTERVAL=10", "a todo repeats at least once every 5 years."),
        ("FREQ=DAILY;COUNT=many", "COUNT must be a whole number of at least 1."),
        ("FREQ=DAILY;UNTIL=2030", "UNTIL must be a UTC date and time like 20301231T235959Z."),
        ("FREQ=DAILY;COUNT=2;UNTIL=20300101T000000Z", "Give COUNT or UNTIL, not both."),
    ],
)
def test_an_invalid_rule_is_explained_in_the_users_words(alice: Api, rule: str, says: str) -> None:
    _, response = create(alice, rule)

    message = refusal(response)
    assert says in message
    assert "unpack" not in message  # no exception text from dateutil
    assert "Not a valid RRULE" not in message


# -- ordinary rules keep working ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=DAILY",
        "FREQ=WEEKLY;BYDAY=MO,WE",
        "FREQ=MONTHLY;BYMONTHDAY=31",
        "FREQ=MONTHLY;BYDAY=-1FR",
        "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
        "FREQ=DAILY;INTERVAL=2;BYHOUR=7;BYMINUTE=30",
        "FREQ=WEEKLY;INTERVAL=2;WKST=SU;BYDAY=SU,TU;COUNT=10",
    ],
)
def test_an_ordinary_rule_is_accepted_as_written(alice: Api, rule: str) -> None:
    _, response = create(alice, rule)

    assert response.status_code == 201, response.json()
    assert response.json()["recurrence"] == rule


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("inline_worker")
@pytest.mark.parametrize(
    ("rule", "due_at", "next_due", "then_due"),
    [
        (
            "FREQ=MONTHLY;BYMONTHDAY=31",
            "2030-01-31T09:00:00+00:00",
            "2030-03-31T09:00:00+00:00",  # February and April have no 31st
            "2030-05-31T09:00:00+00:00",
        ),
        (
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
            "2028-02-29T09:00:00+00:00",
            "2032-02-29T09:00:00+00:00",
            "2036-02-29T09:00:00+00:00",
        ),
    ],
)
def test_a_sparse_rule_within_the_horizon_goes_on_at_each_completion(
    alice: Api, rule: str, due_at: str, next_due: str, then_due: str
) -> None:
    first = alice.create(due_at=due_at, recurrence=rule)

    complete(alice, first["id"])
    second = next_of(first["id"])
    complete(alice, str(second.stream_id))
    third = next_of(first["id"], count=2)

    assert parse(second.data["due_at"]) == parse(next_due)
    assert parse(third.data["due_at"]) == parse(then_due)


# -- at completion: the series ends cleanly ---------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("inline_worker")
def test_a_next_occurrence_beyond_the_horizon_ends_the_series_cleanly(alice: Api) -> None:
    """2100 is no leap year: after 29 February 2096 the next is in 2104, 8 years on."""
    first = alice.create(due_at="2096-02-29T09:00:00Z", recurrence=LEAP_DAY)

    completed = complete(alice, first["id"])

    handled(completed)  # the step succeeded: nothing to retry, nothing dead-lettered
    assert series_created(first["id"]) == []
    assert not DeadLetter.objects.filter(handler=HANDLER).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("inline_worker")
def test_completing_a_todo_with_a_trap_stored_before_the_limits_ends_its_series_at_once(
    alice: Api,
) -> None:
    """A rule accepted by an older version is not searched for 21 s at each completion."""
    todo = Todo(uuid.uuid4())
    todo.record(TodoCreated(owner_id=alice.user.pk, title="Legacy", recurrence=TRAP))
    services.repository.save(todo, CommandContext(actor_id="tests"))

    completed = complete(alice, str(todo.id))

    delivery = handled(completed)

    assert series_created(str(todo.id)) == []
    # From its start to its end, the handler ran briefly (unbounded: seconds of searching).
    assert (delivery.updated_at - delivery.created_at).total_seconds() < BOUNDED


# -- the bounded search agrees with dateutil ------------------------------------------------

AGREES = [
    "FREQ=DAILY",
    "FREQ=DAILY;INTERVAL=3;BYDAY=MO,FR",
    "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29",
    "FREQ=DAILY;BYMONTHDAY=-1;BYHOUR=8",
    "FREQ=DAILY;INTERVAL=7;BYDAY=TU",
    "FREQ=WEEKLY",
    "FREQ=WEEKLY;INTERVAL=2;BYDAY=SU,SA",
    "FREQ=WEEKLY;INTERVAL=3;WKST=SU;BYDAY=SU,MO",
    "FREQ=WEEKLY;INTERVAL=5;BYMONTH=1,7;BYDAY=FR;BYHOUR=0",
    "FREQ=MONTHLY",
    "FREQ=MONTHLY;BYMONTHDAY=31",
    "FREQ=MONTHLY;BYDAY=-1FR;INTERVAL=2",
    "FREQ=MONTHLY;BYDAY=5FR",
    "FREQ=MONTHLY;BYDAY=SA,SU;BYSETPOS=2",
    "FREQ=MONTHLY;INTERVAL=7;BYMONTHDAY=30;BYMINUTE=15",
    "FREQ=YEARLY",
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
    "FREQ=YEARLY;INTERVAL=4;BYMONTH=2;BYMONTHDAY=29",
    "FREQ=YEARLY;BYWEEKNO=53",
    "FREQ=YEARLY;BYWEEKNO=-1;BYDAY=FR",
    "FREQ=YEARLY;BYYEARDAY=60,366",
    "FREQ=YEARLY;BYDAY=20MO",
    "FREQ=YEARLY;BYMONTH=12;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
]
STARTS = [
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(2028, 2, 29, 9, 0, tzinfo=UTC),
    datetime(2030, 1, 31, 23, 59, 59, 500_000, tzinfo=UTC),
    datetime(2031, 12, 28, 6, 30, tzinfo=timezone(timedelta(hours=2))),
    datetime(2036, 7, 4, 12, 0, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
    datetime(2096, 3, 1, tzinfo=UTC),
    datetime(2099, 12, 31, 23, 0, tzinfo=UTC),
]


@pytest.mark.parametrize("rule", AGREES)
def test_the_bounded_search_finds_what_dateutil_finds_within_the_horizon(rule: str) -> None:
    parts = rrules.checked(rule)
    for start in STARTS:
        expected = rrulestr(rule, dtstart=start).after(start)  # these rules all match, soon
        if expected is not None and expected > start + relativedelta(years=5):
            expected = None

        assert recurrence.first_within(parts, start) == expected, start
