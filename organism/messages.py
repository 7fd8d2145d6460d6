"""What travels between the dispatchers, the Coordinator and the agents, and how it fails.

- :class:`TaskPayload`: one claimed attempt, dispatcher → Coordinator → agent.
- :class:`Outcome`: how that attempt ended (an :class:`OutcomeStatus`), agent → Coordinator →
  dispatcher. A successful outcome's :attr:`Outcome.result` is what the task's ``result``
  column gets: ``{"output": …, "routing": {"path", "organ_id", "agent_id", "duration_ms"}}``.
  Its :attr:`Outcome.run` says where and when the attempt ran and what its handler logged
  (:class:`Run`, over the agent's :class:`Placement`): the task's ``runs`` get it.
- The exceptions a caller sees when a message gets no answer: :class:`ActorUnavailable`
  (:class:`ActorTimeout`, :class:`CoordinatorUnavailable`) and :class:`CallCancelled`.
  ``organism.ray`` turns Ray's own exceptions into these, so the plain classes never see Ray's.

Across Ray (and only there) a message travels as a tuple: :func:`pack_tasks` and
:func:`pack_outcomes` make them, :func:`unpack_tasks` and :func:`unpack_outcomes` read them.
Tuples of plain values pickle several times faster than dataclasses, which Ray's pickler
reduces one by one in Python, and about half the size of dicts; everywhere else code uses the
classes' attributes. Plain Python: no Ray, no Django.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple


class OutcomeStatus(enum.Enum):
    OK = "ok"  # the handler returned: its output becomes the task's result
    ERROR = "error"  # the handler raised: retried until the last attempt
    PERMANENT = "permanent"  # retrying cannot help (PermanentError, no handler): fails at once
    CANCELLED = "cancelled"  # a cancel stopped it
    TIMED_OUT = "timed_out"  # it ran past its timeout and was stopped: retried
    # SeedCore failed it, not the handler; retried:
    UNAVAILABLE = "unavailable"  # nothing could run it (shut down, no agents, no answer)
    CRASHED = "crashed"  # the Coordinator's own code failed
    # Ray lost it (its agent actor died, its node was removed, its worker was killed for
    # memory, an object was lost): retried at once, against SEEDCORE_MAX_SYSTEM_RETRIES, with
    # the attempts budget untouched. Outcome.kind says which (SYSTEM_KINDS).
    SYSTEM = "system"


# What a SYSTEM outcome's kind may be (organism.ray.errors picks it from Ray's exception).
SYSTEM_KINDS = ("actor_died", "node_died", "out_of_memory", "object_lost", "worker_died")


_STATUSES = {status.value: status for status in OutcomeStatus}


@dataclass(slots=True)
class TaskPayload:
    """One attempt of a task, as the dispatcher that claimed it sends it to be run."""

    id: str
    type: str
    attempt: int  # the fencing token of the claim: the outcome carries it back
    params: dict[str, Any]
    drift_score: float = 0.0
    domain: str | None = None

    @classmethod
    def from_claim(cls, row: Mapping[str, Any]) -> TaskPayload:
        """The payload of a row ``tasks.queue.claim`` returned."""
        return cls(
            row["id"],
            row["type"],
            row["attempts"],
            row["params"] or {},
            row["drift_score"] or 0.0,
            row["domain"],
        )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, id: str, attempt: int) -> TaskPayload:
        """A task given as a dict (``type``, ``params``, ``drift_score``, ``domain``), as the
        ``execute_on_organ`` control types take it in their params."""
        return cls(
            id,
            spec["type"],
            attempt,
            spec.get("params") or {},
            spec.get("drift_score") or 0.0,
            spec.get("domain"),
        )


@dataclass(slots=True)
class Routing:
    """Where a successful attempt ran. ``path`` (fast or escalated) is the manager's to set;
    control types run on the Coordinator itself, on no organ and no agent."""

    path: str | None
    organ_id: str | None
    agent_id: str | None
    duration_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "organ_id": self.organ_id,
            "agent_id": self.agent_id,
            "duration_ms": self.duration_ms,
        }


class Placement(NamedTuple):
    """Where an agent runs, read once when its process starts (never per task): the Ray node's
    id and IP, the worker's pid, the agent actor's id, and its organ. A tuple, so one agent's
    outcomes share one object, which pickle sends once per message."""

    node_id: str | None
    node_ip: str | None
    pid: int | None
    actor_id: str | None
    organ_id: str | None


@dataclass(slots=True)
class Run:
    """One attempt as an agent ran it: where (:class:`Placement`), when (``time.time()`` at
    its start and end) and what its handler logged (None: nothing)."""

    placement: Placement
    started_at: float
    finished_at: float
    log: str | None = None


# The run's ``outcome``, as the task's ``runs`` record it, for each way an attempt ends.
RUN_OUTCOMES = {
    "ok": "completed",
    "error": "error",
    "permanent": "error",
    "cancelled": "cancelled",
    "timed_out": "timeout",
    "unavailable": "error",
    "crashed": "error",
    "system": "system",
}


@dataclass(slots=True)
class Outcome:
    """How one attempt ended; made with :meth:`success` or :meth:`failure`."""

    task_id: str
    attempt: int
    status: OutcomeStatus
    output: Any = None
    routing: Routing | None = None
    error: str | None = None
    traceback: str | None = None
    max_attempts: int | None = None  # the handler's cap on attempts, if it sets one
    run: Run | None = None  # where it ran; None when no agent ran it (or a control type)
    kind: str | None = None  # a SYSTEM outcome's kind (SYSTEM_KINDS)

    @classmethod
    def success(
        cls, task: TaskPayload, output: Any, routing: Routing, run: Run | None = None
    ) -> Outcome:
        return cls(task.id, task.attempt, OutcomeStatus.OK, output, routing, run=run)

    @classmethod
    def failure(
        cls,
        task: TaskPayload,
        status: OutcomeStatus,
        error: str,
        *,
        traceback: str | None = None,
        max_attempts: int | None = None,
        run: Run | None = None,
        kind: str | None = None,
    ) -> Outcome:
        return cls(
            task.id, task.attempt, status, None, None, error, traceback, max_attempts, run, kind
        )

    @property
    def ok(self) -> bool:
        return self.status is OutcomeStatus.OK

    @property
    def permanent(self) -> bool:
        return self.status is OutcomeStatus.PERMANENT

    @property
    def cancelled(self) -> bool:
        return self.status is OutcomeStatus.CANCELLED

    @property
    def system(self) -> bool:
        return self.status is OutcomeStatus.SYSTEM

    def run_record(self) -> tuple | None:
        """The attempt as the queue records it in the task's ``runs`` (``tasks.queue.RUN_FIELDS``
        order): node id, node IP, pid, actor id, organ id, start and end (``time.time()``),
        outcome (RUN_OUTCOMES) and log; None when no agent reported a run. A plain tuple, made
        without a dict or a JSON dump: the database builds the entry."""
        run = self.run
        if run is None:
            return None
        return (
            *run.placement,
            run.started_at,
            run.finished_at,
            RUN_OUTCOMES[self.status.value],
            run.log,
        )

    @property
    def result(self) -> dict[str, Any] | None:
        """The task's ``result`` column for a successful attempt; None otherwise."""
        if not self.ok:
            return None
        return {"output": self.output, "routing": self.routing.as_dict() if self.routing else {}}


# PostgreSQL's jsonb refuses \u0000 and unpaired surrogates in any string, key or value.
_JSONB_REFUSES = re.compile("[\x00\ud800-\udfff]")


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored in a jsonb column, or None if it can.

    JSON holds no datetimes, sets or other objects, no NaN or Infinity; PostgreSQL's jsonb
    also refuses a NUL character and unpaired surrogates in a string.
    """
    try:
        json.dumps(value, allow_nan=False)
    except ValueError as exc:
        return "NaN or Infinity is not JSON" if "float" in str(exc) else str(exc)
    except (TypeError, RecursionError) as exc:
        return str(exc)
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found = _JSONB_REFUSES.search(item)
            if found:
                char = "NUL (\\u0000)" if found.group() == "\x00" else "an unpaired surrogate"
                return f"a string holds {char}, which PostgreSQL's jsonb cannot store"
        elif isinstance(item, dict):
            stack.extend(key for key in item if isinstance(key, str))
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


# ---------------------------------------------------------------------------------------------
# When a message gets no answer


class ActorUnavailable(Exception):
    """An actor did not answer: it is not running, or died while answering.

    ``kind`` (SYSTEM_KINDS) is set when Ray says the actor, its node, its worker or an object
    was lost: for an agent, that makes the attempt a SYSTEM failure rather than UNAVAILABLE.
    """

    def __init__(self, message: str = "", *, kind: str | None = None):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple:
        return (type(self), self.args, {"kind": self.kind})


class ActorTimeout(ActorUnavailable):
    """An actor did not answer in time; it may still be alive, just busy."""


class CoordinatorUnavailable(ActorUnavailable):
    """The Coordinator cannot be found or did not answer; the message says what to do."""


class CallCancelled(Exception):
    """The call was cancelled before it answered: a cancel of its task reached it first."""


# ---------------------------------------------------------------------------------------------
# The wire: tuples, across Ray only


def pack_tasks(tasks: Iterable[TaskPayload]) -> list[tuple]:
    return [(t.id, t.type, t.attempt, t.params, t.drift_score, t.domain) for t in tasks]


def unpack_tasks(wire: Iterable[tuple]) -> list[TaskPayload]:
    return [TaskPayload(*fields) for fields in wire]


def pack_outcomes(outcomes: Iterable[Outcome]) -> list[tuple]:
    # A run is (placement, started, finished, log): the placement is one tuple per agent,
    # shared by its outcomes, so a chunk carries it once (pickle's memo) and a task adds two
    # floats and, only when its handler logged something, a string.
    return [
        (
            o.task_id,
            o.attempt,
            o.status.value,
            o.output,
            None if (r := o.routing) is None else (r.path, r.organ_id, r.agent_id, r.duration_ms),
            o.error,
            o.traceback,
            o.max_attempts,
            None if (u := o.run) is None else (u.placement, u.started_at, u.finished_at, u.log),
            o.kind,
        )
        for o in outcomes
    ]


def unpack_outcomes(wire: Iterable[tuple]) -> list[Outcome]:
    return [
        Outcome(
            task_id,
            attempt,
            _STATUSES[status],
            output,
            None if routing is None else Routing(*routing),
            error,
            traceback,
            max_attempts,
            None if run is None else Run(*run),
            kind,
        )
        for (
            task_id,
            attempt,
            status,
            output,
            routing,
            error,
            traceback,
            max_attempts,
            run,
            kind,
        ) in wire
    ]
