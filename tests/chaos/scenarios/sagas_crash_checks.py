"""The checks of scenario 13 (sagas under crash), by SQL on the drained chaos database.

Each returns what differs from the issue's promise (empty when kept), with evidence:

- every saga ended ``completed`` or ``compensated``, and as planned: a chaos saga
  compensated exactly when its todo's title named a failing step, every todo-completion
  saga completed; one saga of each kind per completion;
- exactly the planned failing steps were dead-lettered (kind ``business_rule``);
- each step done took effect once; each compensation of a step done ran exactly once, in
  reverse order of the steps (the step log's order, and the order of their effects);
- the step log is complete: every step or compensation asked has exactly one end
  (completed, or failed for good), matching the saga's events, actions in step order;
- each kill landed mid-step: the ledger counts a run of that delivery that never finished;
- each saga that needed a recovery ended within one stuck-saga sweep interval
  (+ ``SLACK_SECONDS``) of its last fault, the latest of its start, its step's failure and
  the kill of one of its steps; a killed saga may first be stuck until the killed step's
  deadline (``_in_time``). A saga needed a recovery when one of its steps was killed, asked
  for twice (the sweep), or its message re-sent or run more than once (the ledger, a
  broker redelivery). A saga whose every step ran once on its first message moved by its
  own messages alone: how long those waited behind other messages is the workers'
  throughput, not a recovery, and is not held to the bound.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q

from apps.eventstore.models import Event
from apps.resilience.models import DeadLetter, Delivery
from apps.sagas import definitions
from apps.sagas.completion import NAME as COMPLETION
from apps.sagas.definitions import SagaDefinition
from apps.sagas.events import STREAM_TYPE
from apps.sagas.models import SagaInstance, SagaStep
from tests.chaos.effects import EFFECT_STREAM_TYPE, effect_stream
from tests.chaos.handlers import SAGA, SAGA_COMPENSATED, SAGA_STEPS

State, Phase, Status = SagaInstance.State, SagaStep.Phase, SagaStep.Status
FINAL = (State.COMPLETED, State.COMPENSATED)
# How long a saga may take after its last fault beyond one sweep interval: its remaining
# messages (the killed step's re-run, later steps, compensations) queued behind the others'.
SLACK_SECONDS = 5.0


@dataclass(frozen=True)
class Kill:
    """A SIGKILL that landed on a held saga step: when, whom, and which delivery."""

    at: datetime
    pid: int
    handler: str
    saga_id: str
    event_id: str


@dataclass
class Saga:
    """A saga as it ended: its row, its step log in the order written, its events."""

    row: SagaInstance
    log: list[SagaStep]
    stream: list[Event]

    @property
    def id(self) -> str:
        return str(self.row.pk)

    @property
    def definition(self) -> SagaDefinition:
        return definitions.definition(self.row.type)

    @property
    def fails_at(self) -> str | None:
        return self.row.context.get("fails_at")

    def ends(self, phase: str) -> list[SagaStep]:
        """Return the rows that end a run of a step in ``phase``: completed, or failed for good
        (not the rows of steps done by the trigger, attempt 0)."""
        return [
            r
            for r in self.log
            if r.phase == phase and r.attempt > 0 and (r.status == Status.COMPLETED or r.final)
        ]


def check(planned: dict[str, str | None], kills: list[Kill], sweep: float) -> tuple[list[str], str]:
    """Return the findings and a summary of how the sagas ended."""
    sagas = _sagas()
    chaos = [s for s in sagas if s.row.type == SAGA]
    found = _ended(sagas) + _as_planned(sagas, planned) + _dead_letters(chaos)
    found += _compensations(chaos) + _step_logs(sagas) + _kills_landed(kills)
    late, timing = _in_time(sagas, kills, sweep)
    tally = Counter(f"{s.row.type} {s.row.state}" for s in sagas)
    summary = ", ".join(f"{n} {what}" for what, n in sorted(tally.items()))
    return found + late, f"{summary}; {timing}"


def _sagas() -> list[Saga]:
    """Return every saga of the run with its step log and its events, oldest first."""
    logs: dict[Any, list[SagaStep]] = defaultdict(list)
    for step in SagaStep.objects.order_by("id"):
        logs[step.saga_id].append(step)
    streams: dict[Any, list[Event]] = defaultdict(list)
    for event in Event.objects.filter(stream_type=STREAM_TYPE).order_by("position"):
        streams[event.stream_id].append(event)
    rows = SagaInstance.objects.order_by("created_at")
    return [Saga(row, logs[row.pk], streams[row.pk]) for row in rows]


def _ended(sagas: list[Saga]) -> list[str]:
    """Every saga ended completed or compensated (none running, compensating or failed)."""
    stuck = [(s.id, s.row.type, s.row.state, s.row.current_step) for s in sagas]
    stuck = [s for s in stuck if s[2] not in FINAL]
    return [f"{len(stuck)} sagas not completed or compensated: {stuck[:5]}"] if stuck else []


def _as_planned(sagas: list[Saga], planned: dict[str, str | None]) -> list[str]:
    """Every todo was completed and started one saga of each kind; a chaos saga read its
    todo's planned failure and compensated exactly when it had one; every todo-completion
    saga completed (nothing fails there)."""
    found: list[str] = []
    done = Event.objects.filter(type="todo.completed").values_list("stream_id", flat=True)
    completed = {str(todo) for todo in done}
    if completed != set(planned):
        found.append(f"{len(set(planned) ^ completed)} todos created != todos completed")
    for kind in (SAGA, COMPLETION):
        subjects = Counter(str(s.row.subject_id) for s in sagas if s.row.type == kind)
        if set(subjects) != completed or set(subjects.values()) - {1}:
            found.append(f"{sum(subjects.values())} {kind} sagas for {len(completed)} completions")
    wrong = [
        (s.id, s.row.type, _planned(s, planned), s.fails_at, s.row.state)
        for s in sagas
        if s.row.state != _expected_state(s) or s.fails_at != _planned(s, planned)
    ]
    if wrong:
        found.append(
            f"{len(wrong)} sagas ended otherwise than planned"
            f" (saga, type, planned failure, read, state): {wrong[:5]}"
        )
    return found


def _expected_state(saga: Saga) -> str:
    return State.COMPENSATED if saga.fails_at else State.COMPLETED


def _planned(saga: Saga, planned: dict[str, str | None]) -> str | None:
    """Return the step planned to fail in ``saga`` (none in a todo-completion saga)."""
    return planned.get(str(saga.row.subject_id)) if saga.row.type == SAGA else None


def _dead_letters(chaos: list[Saga]) -> list[str]:
    """Exactly the planned failing steps were dead-lettered, as business-rule failures: no
    kill cost a dead letter (a saga is killed once, below the worker-lost limit)."""
    expected = {
        (definitions.handler_name(SAGA, s.fails_at, undo=False), s.id, "business_rule")
        for s in chaos
        if s.fails_at
    }
    letters = DeadLetter.objects.values_list("handler", "stream_id", "kind")
    found = {(handler, str(saga), kind) for handler, saga, kind in letters}
    if found == expected:
        return []
    extra, missing = sorted(found - expected), sorted(expected - found)
    return [f"dead letters != planned failures: extra {extra[:5]}, missing {missing[:5]}"]


def _compensations(chaos: list[Saga]) -> list[str]:
    """Effects and compensations of each chaos saga (its plan says which steps were done)."""
    effects: dict[Any, list[int]] = defaultdict(list)
    rows = Event.objects.filter(stream_type=EFFECT_STREAM_TYPE).values_list("stream_id", "position")
    for stream_id, position in rows:
        effects[stream_id].append(position)
    wrong = [found for saga in chaos if (found := _compensated_once(saga, effects))]
    if not wrong:
        return []
    return [
        f"{len(wrong)} chaos sagas whose effects or compensations are wrong"
        f" (saga, fails at, effects, compensations logged): {wrong[:5]}"
    ]


def _compensated_once(saga: Saga, effects: dict[Any, list[int]]) -> tuple[Any, ...] | None:
    """Return the evidence if a step done didn't take effect once, or its compensation
    didn't run exactly once, latest step first; else None."""
    fails_at = saga.fails_at
    done = SAGA_STEPS[: SAGA_STEPS.index(fails_at)] if fails_at else SAGA_STEPS
    undone = [s for s in reversed(done) if s in SAGA_COMPENSATED] if fails_at else []

    def positions(step: str, undo: bool) -> list[int]:
        handler = definitions.handler_name(SAGA, step, undo=undo)
        return effects[effect_stream(saga.row.pk, handler)]

    counts = {(s, u): len(positions(s, u)) for s in SAGA_STEPS for u in (False, True)}
    expected = {(s, u): int(s in (undone if u else done)) for s, u in counts}
    logged = [r.step for r in saga.ends(Phase.COMPENSATION) if r.status == Status.COMPLETED]
    order = [min(positions(s, True), default=0) for s in undone]
    if counts == expected and logged == undone and order == sorted(order):
        return None
    return (saga.id, fails_at, {f"{s}{'.undo' * u}": n for (s, u), n in counts.items()}, logged)


def _step_logs(sagas: list[Saga]) -> list[str]:
    """Every saga's step log is complete (``_incomplete``)."""
    wrong = [(s.id, problem) for s in sagas if (problem := _incomplete(s))]
    return [f"{len(wrong)} sagas with an incomplete step log: {wrong[:5]}"] if wrong else []


def _incomplete(saga: Saga) -> str | None:
    """Return how the saga's step log is incomplete or disagrees with its events, or None.

    Every step and compensation asked (a message in its stream) has exactly one end in the
    log; the log ends nothing that wasn't asked; a step done by the trigger is logged once,
    at the start; the actions were done in step order; the stream records the same ends in
    the same order, and ends with the saga's state."""
    names = [step.name for step in saga.definition.steps]
    asked = {
        (e.type.removesuffix(".undo").rsplit(".", 1)[1], e.type.endswith(".undo"))
        for e in saga.stream
        if e.type.startswith(f"saga.{saga.row.type}.")
    }
    ends_all = saga.ends(Phase.ACTION) + saga.ends(Phase.COMPENSATION)
    for phase, undo in ((Phase.ACTION, False), (Phase.COMPENSATION, True)):
        ends = Counter(r.step for r in saga.ends(phase))
        if ends != Counter({step: 1 for step, u in asked if u == undo}):
            return f"{phase} ends {dict(ends)} for the steps asked {sorted(asked)}"
    by_trigger = [s.name for s in saga.definition.steps if s.action is None]
    if sorted(r.step for r in saga.log if r.attempt == 0) != sorted(by_trigger):
        return f"the steps done by the trigger {by_trigger} are not logged once"
    done = [r.step for r in saga.ends(Phase.ACTION) if r.status == Status.COMPLETED]
    if done != sorted(done, key=names.index):
        return f"actions done out of step order: {done}"
    logged = [(r.step, r.phase, r.status) for r in saga.log if r in ends_all]
    recorded = [end for e in saga.stream if (end := _end_of(e)) is not None]
    if logged != recorded:
        return f"the log's ends {logged} differ from the stream's {recorded}"
    last = saga.stream[-1].type if saga.stream else None
    return None if last == f"saga.{saga.row.state}" else f"its stream ends with {last}"


_END_EVENTS = {
    "saga.step_completed": (Phase.ACTION.value, Status.COMPLETED.value),
    "saga.step_failed": (Phase.ACTION.value, Status.FAILED.value),
    "saga.step_compensated": (Phase.COMPENSATION.value, Status.COMPLETED.value),
}


def _end_of(event: Event) -> tuple[str, str, str] | None:
    """Return the (step, phase, status) an event of the saga's stream records, if any."""
    found = _END_EVENTS.get(event.type)
    return (event.data["step"], *found) if found else None


def _kills_landed(kills: list[Kill]) -> list[str]:
    """Each kill hit a run of its delivery that then never finished (starts > finishes)."""
    missed = []
    for kill in kills:
        row = Delivery.objects.filter(handler=kill.handler, event_id=kill.event_id).first()
        if row is None or row.starts <= row.finishes:
            missed.append((kill.handler, kill.event_id, row and (row.starts, row.finishes)))
    return [f"{len(missed)} kills the ledger saw no lost run of: {missed[:5]}"] if missed else []


def _in_time(sagas: list[Saga], kills: list[Kill], sweep: float) -> tuple[list[str], str]:
    """Return the sagas that ended late after their last fault, and how the killed ended.

    A saga's last fault is the latest of its start, its step's failure for good and a kill
    of one of its steps. Within one sweep interval of it (+ ``SLACK_SECONDS``) it must end;
    after a kill, the killed step may be stuck until its deadline first: the sweep asks it
    again within one interval after that, if the broker has not redelivered it by then.
    """
    killed = {kill.saga_id: kill for kill in kills}  # one kill per saga
    redone = _redone_step_messages()
    late, longest, swept = [], 0.0, 0
    for saga in sagas:
        if saga.row.finished_at is None:
            continue  # not ended: reported by _ended
        recovered = _asked_again(saga) or any(e.event_id in redone for e in saga.stream)
        if saga.id not in killed and not recovered:
            continue  # no recovery: its own messages moved it, however long they queued
        faults = [saga.row.created_at, *(r.finished_at for r in saga.log if r.final)]
        bound = sweep + SLACK_SECONDS
        kill = killed.get(saga.id)
        if kill is not None:
            faults.append(kill.at)
            bound += _deadline(saga, kill.handler)
            longest = max(longest, (saga.row.finished_at - kill.at).total_seconds())
            swept += sum(e.type == kill.handler for e in saga.stream) > 1
        took = (saga.row.finished_at - max(faults)).total_seconds()
        if took > bound:
            late.append((saga.id, saga.row.type, round(took, 1), bound))
    summary = (
        f"killed sagas ended at most {longest:.1f} s after the kill,"
        f" {swept} of them after the sweep asked the killed step again"
    )
    if not late:
        return [], summary
    return [f"{len(late)} sagas ended late (saga, type, s after last fault, bound): {late[:5]}"], (
        summary
    )


def _asked_again(saga: Saga) -> bool:
    """Whether a step (or compensation) of ``saga`` was asked for more than once: each ask
    is an event whose type is the step's handler name (``definitions.handler_name``)."""
    asks = Counter(e.type for e in saga.stream if e.type.startswith(f"saga.{saga.row.type}."))
    return any(n > 1 for n in asks.values())


def _redone_step_messages() -> set[Any]:
    """Return the ids of the saga step messages the ledger re-sent or a worker ran more
    than once (a lost or redelivered message: a recovery the step log may not show)."""
    return set(
        Delivery.objects.filter(handler__startswith="saga.")
        .filter(Q(resends__gt=0) | Q(starts__gt=1))
        .values_list("event_id", flat=True)
    )


def _deadline(saga: Saga, handler: str) -> float:
    """Return the deadline of the step (or compensation) ``handler`` runs."""
    step = handler.removesuffix(".undo").rsplit(".", 1)[1]
    return saga.definition.step(step).deadline
