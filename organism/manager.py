"""The OrganismManager: owns the organs, routes tasks to agents, serves the control types.

Plain Python, driven by the Coordinator. Organs come from an injected factory (Ray actors in
production, in-process organs in unit tests). Tasks go straight to the chosen agent; a batch is
grouped by agent so each agent gets one call, and outcomes stream back as each task finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from organism.agent import run_handler, stop
from organism.handlers import (
    HandlerSpec,
    PermanentError,
    TaskCancelled,
    TaskContext,
    get_handler,
    missing_handler_message,
)
from organism.messages import (
    CallCancelled,
    Outcome,
    OutcomeStatus,
    Placement,
    Run,
    TaskPayload,
)
from organism.organ import AgentClient
from organism.routing import FAST, OrganSpec, Route, choose_organ, least_loaded


class OrganClient(Protocol):
    spec: OrganSpec

    async def start(self) -> list[AgentClient]: ...

    async def status(self) -> dict[str, Any]: ...

    async def shutdown(self) -> int: ...


OrganFactory = Callable[[OrganSpec], Awaitable[OrganClient]]


class OrganismShutDown(Exception):
    pass


class OrganismManager:
    def __init__(
        self,
        organs: Sequence[OrganSpec],
        organ_factory: OrganFactory,
        *,
        drift_threshold: float = 0.5,
        default_timeout: float = 300.0,
        rng: random.Random | None = None,
    ):
        self.specs = list(organs)
        self.drift_threshold = drift_threshold
        self.default_timeout = default_timeout
        self._organ_factory = organ_factory
        self._rng = rng or random.Random()
        self._organs: dict[str, OrganClient] = {}
        self._agents: dict[str, list[AgentClient]] = {}
        self._load: Counter[str] = Counter()  # agent id -> tasks in flight
        self._in_flight: dict[str, AgentClient] = {}  # task id -> the agent running it
        self._controls: dict[str, tuple[TaskContext, asyncio.Future]] = {}  # run here
        self._cancelled: set[str] = set()
        self._paths: Counter[str] = Counter()
        self._suspect: set[str] = set()  # organs with an agent that failed a call
        # Agents Ray lost (by _agent_key): not picked until a heal finds them alive, so a
        # system failure's retry runs on another agent even while the organ cannot yet replace
        # the lost one (Ray has not declared it dead, and its name still hands out its handle).
        self._lost_agents: set[Any] = set()
        self._started = time.time()
        self._lock = asyncio.Lock()
        self.initialized = False
        self.shut_down = False

    # -- lifecycle -------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Create (or reuse) every organ and its agents."""
        async with self._lock:
            if self.initialized:
                return
            organs = await asyncio.gather(*(self._organ_factory(spec) for spec in self.specs))
            agents = await asyncio.gather(*(organ.start() for organ in organs))
            self._organs = {organ.spec.id: organ for organ in organs}
            self._agents = {organ.spec.id: list(a) for organ, a in zip(organs, agents, strict=True)}
            self.initialized, self.shut_down = True, False

    async def shutdown(self) -> dict[str, Any]:
        """Stop every organ and agent; tasks then fail until initialize() runs."""
        async with self._lock:
            organs, self._organs, self._agents = self._organs, {}, {}
            self.initialized, self.shut_down = False, True
        stopped = await asyncio.gather(*(o.shutdown() for o in organs.values()))
        return {"shutdown": True, "organs_stopped": len(organs), "agents_stopped": sum(stopped)}

    async def _ready(self) -> None:
        if self.initialized:
            if self._suspect:
                await self._heal()
            return
        if self.shut_down:
            raise OrganismShutDown("the organism is shut down; submit initialize_organism")
        await self.initialize()

    async def _heal(self) -> None:
        """Re-start the organs whose agents failed: dead agents (or a dead organ actor) are
        replaced, live ones kept."""
        async with self._lock:
            suspects, self._suspect = self._suspect, set()
            for organ_id in suspects:
                organ = self._organs.get(organ_id)
                if organ is None:
                    continue
                try:
                    agents = await organ.start()
                except Exception:  # the organ actor itself is gone: make a new one
                    organ = await self._organ_factory(organ.spec)
                    agents = await organ.start()
                    self._organs[organ_id] = organ
                self._agents[organ_id] = list(agents)
                # Every agent start() returns has answered: alive, whatever Ray said before.
                self._lost_agents -= {_agent_key(agent) for agent in agents}
            present = {_agent_key(agent) for group in self._agents.values() for agent in group}
            self._lost_agents &= present  # replaced ones are gone for good

    # -- running tasks ---------------------------------------------------------------------

    async def run(self, task: TaskPayload) -> Outcome:
        """Run one task to its outcome."""
        async for chunk in self.run_chunks([task]):
            return chunk[0]
        raise AssertionError("run_chunks yielded nothing")  # pragma: no cover

    async def run_chunks(self, tasks: list[TaskPayload]) -> AsyncIterator[list[Outcome]]:
        """Run tasks, yielding lists of the outcomes finished so far, as they finish; every
        task's outcome appears exactly once.

        Fast tasks finishing together come back together: one message across Ray carries
        many outcomes, which is what lets a batch outrun one call per task.
        """
        finished: asyncio.Queue[Outcome] = asyncio.Queue()
        jobs: list[asyncio.Task] = []
        groups: dict[str, tuple[AgentClient, Route, list[TaskPayload]]] = {}
        refused = []
        for task in tasks:
            spec = get_handler(task.type)
            if spec is None:
                error = missing_handler_message(task.type)
                refused.append(Outcome.failure(task, OutcomeStatus.PERMANENT, error))
                continue
            if spec.control:
                jobs.append(asyncio.ensure_future(self._run_control(spec, task, finished)))
                continue
            try:
                await self._ready()
                route = self._route(task)
                agent = self._pick_agent(route.organ_id)
            except Exception as exc:  # shut down, or no agents: retry later
                finished.put_nowait(
                    Outcome.failure(
                        task, OutcomeStatus.UNAVAILABLE, str(exc), max_attempts=spec.max_attempts
                    )
                )
                continue
            self._hold(agent, task.id)
            groups.setdefault(f"{agent.agent_id}/{route.path}", (agent, route, []))[2].append(task)
        for agent, route, group in groups.values():
            jobs.append(asyncio.ensure_future(self._run_group(agent, route, group, finished)))
        remaining = len(tasks) - len(refused)
        if refused:
            yield refused
        try:
            while remaining:
                chunk = [await finished.get()]
                while not finished.empty():
                    chunk.append(finished.get_nowait())
                remaining -= len(chunk)
                yield chunk
        finally:
            for job in jobs:
                job.cancel()

    async def cancel(self, task_id: str) -> bool:
        """Stop a running task; True if it was running here."""
        control = self._controls.get(task_id)
        if control is not None:
            self._cancelled.add(task_id)
            stop(*control)
            return True
        agent = self._in_flight.get(task_id)
        if agent is None:
            return False
        self._cancelled.add(task_id)
        with contextlib.suppress(Exception):  # a dead agent: its outcome reports that
            await agent.cancel(task_id)
        return True

    def _route(self, task: TaskPayload) -> Route:
        return choose_organ(
            task_type=task.type,
            domain=task.domain,
            drift_score=task.drift_score,
            organs=[self._organs[organ_id].spec for organ_id in self._organs],
            threshold=self.drift_threshold,
            pick=self._rng.choice,
        )

    def _pick_agent(self, organ_id: str) -> AgentClient:
        agents = {
            agent.agent_id: agent
            for agent in self._agents.get(organ_id, [])
            if _agent_key(agent) not in self._lost_agents
        }
        if not agents:
            raise RuntimeError(f"organ {organ_id} has no agents")
        return agents[least_loaded({agent_id: self._load[agent_id] for agent_id in agents})]

    async def _run_group(
        self,
        agent: AgentClient,
        route: Route,
        tasks: list[TaskPayload],
        finished: asyncio.Queue[Outcome],
    ) -> None:
        """Run tasks held for ``agent`` (:meth:`_hold`) and put each outcome on ``finished``."""
        waiting = {task.id: task for task in tasks}
        sent = time.time()

        def deliver(chunk: list[Outcome]) -> None:
            for outcome in chunk:
                task = waiting.pop(outcome.task_id, None)
                if task is not None:
                    finished.put_nowait(self._finish(agent, route, task, outcome))

        try:
            if len(tasks) == 1:  # a plain call, cheaper than a stream
                deliver([await agent.run(tasks[0])])
            else:
                async for chunk in agent.run_batch(tasks):
                    deliver(chunk)
        except Exception as exc:
            deliver(self._lost(agent, route, list(waiting.values()), exc, sent))
        finally:
            for task_id in waiting:  # the caller went away: release the bookkeeping
                self._release(agent, task_id)

    def _lost(
        self,
        agent: AgentClient,
        route: Route,
        tasks: list[TaskPayload],
        exc: Exception,
        sent: float,
    ) -> list[Outcome]:
        """The outcomes of ``tasks`` when the call to ``agent`` failed with ``exc``: CANCELLED
        for a cancelled call; SYSTEM when Ray lost the agent (``exc.kind``), each with a run
        saying where it was lost; else UNAVAILABLE."""
        if isinstance(exc, CallCancelled):
            return [
                Outcome.failure(task, OutcomeStatus.CANCELLED, "cancelled", max_attempts=_cap(task))
                for task in tasks
            ]
        self._suspect.add(route.organ_id)
        error = f"agent {agent.agent_id} failed: {type(exc).__name__}: {exc}"
        kind = getattr(exc, "kind", None)
        if kind is not None:
            self._lost_agents.add(_agent_key(agent))
        if kind is None:
            return [
                Outcome.failure(task, OutcomeStatus.UNAVAILABLE, error, max_attempts=_cap(task))
                for task in tasks
            ]
        placement = getattr(agent, "placement", None) or Placement(
            None, None, None, None, route.organ_id
        )
        run = Run(placement, sent, time.time(), f"[lost: {kind}] {error}")
        return [
            Outcome.failure(
                task,
                OutcomeStatus.SYSTEM,
                f"system failure ({kind}): {error}",
                max_attempts=_cap(task),
                run=run,
                kind=kind,
            )
            for task in tasks
        ]

    def _finish(
        self, agent: AgentClient, route: Route, task: TaskPayload, outcome: Outcome
    ) -> Outcome:
        if task.id in self._cancelled and not outcome.cancelled:
            cap, ran = outcome.max_attempts, outcome.run
            outcome = Outcome.failure(
                task, OutcomeStatus.CANCELLED, "cancelled", max_attempts=cap, run=ran
            )
        self._release(agent, task.id)
        if outcome.ok:
            outcome.routing.path = route.path
            self._paths[route.path] += 1
        return outcome

    def _hold(self, agent: AgentClient, task_id: str) -> None:
        self._load[agent.agent_id] += 1
        self._in_flight[task_id] = agent

    def _release(self, agent: AgentClient, task_id: str) -> None:
        self._load[agent.agent_id] -= 1
        if self._load[agent.agent_id] <= 0:
            del self._load[agent.agent_id]
        self._in_flight.pop(task_id, None)
        self._cancelled.discard(task_id)

    async def _run_control(
        self, spec: HandlerSpec, task: TaskPayload, finished: asyncio.Queue[Outcome]
    ) -> None:
        ctx = TaskContext(task_id=task.id, attempt=task.attempt, organism=self)
        job = asyncio.ensure_future(spec.func(task.params, ctx))
        self._controls[task.id] = (ctx, job)
        try:
            outcome = await run_handler(
                task,
                spec,
                ctx,
                job,
                timeout=spec.timeout or self.default_timeout,
                organ_id=None,
                agent_id=None,
            )
        finally:
            self._controls.pop(task.id, None)
            self._cancelled.discard(task.id)
        if outcome.ok:
            outcome.routing.path = FAST
        finished.put_nowait(outcome)

    # -- control types ---------------------------------------------------------------------

    async def execute_on_organ(
        self, organ_id: str | None, task: dict[str, Any], ctx: TaskContext
    ) -> dict[str, Any]:
        """Run ``task`` (a dict with a ``type``) on ``organ_id`` (a random organ if None);
        returns its result, ``{"output", "routing"}``."""
        spec = get_handler(task["type"])
        if spec is None:
            raise PermanentError(missing_handler_message(task["type"]))
        if spec.control:
            raise PermanentError(f"control type '{spec.type}' cannot run on an organ")
        await self._ready()
        if organ_id is None:
            organ_id = self._rng.choice(sorted(self._organs))
        elif organ_id not in self._organs:
            known = ", ".join(sorted(self._organs))
            raise PermanentError(f"no organ '{organ_id}'; the organs are {known}")
        inner = TaskPayload.from_spec(task, id=f"{ctx.task_id}:inner", attempt=ctx.attempt)
        agent = self._pick_agent(organ_id)
        self._hold(agent, inner.id)
        finished: asyncio.Queue[Outcome] = asyncio.Queue()
        try:
            await self._run_group(agent, Route(FAST, organ_id), [inner], finished)
        except asyncio.CancelledError:
            await agent.cancel(inner.id)
            raise
        outcome = finished.get_nowait()
        if outcome.ok:
            return outcome.result
        if outcome.cancelled:
            raise TaskCancelled(outcome.error)
        error = f"on organ {organ_id}: {outcome.error}"
        raise PermanentError(error) if outcome.permanent else RuntimeError(error)

    async def status(self) -> list[dict[str, Any]]:
        """Every organ's status (kind, agents with their state, load)."""
        await self._ready_if_never_started()
        organs = list(self._organs.values())
        statuses = await asyncio.gather(*(o.status() for o in organs), return_exceptions=True)
        out = []
        for organ, status in zip(organs, statuses, strict=True):
            if isinstance(status, BaseException):
                status = {
                    "organ_id": organ.spec.id,
                    "kind": organ.spec.kind,
                    "alive": False,
                    "error": str(status),
                    "agent_count": 0,
                    "agents": [],
                    "load": 0,
                }
            out.append(status)
        return out

    async def summary(self) -> dict[str, Any]:
        organs = await self.status()
        return {
            "initialized": self.initialized,
            "organ_count": len(organs),
            "total_agent_count": sum(organ["agent_count"] for organ in organs),
            "organs": organs,
        }

    async def metrics(self) -> dict[str, Any]:
        organs = await self.status()
        agents = [agent for organ in organs for agent in organ["agents"]]
        return {
            "initialized": self.initialized,
            "uptime_s": round(time.time() - self._started, 3),
            "in_flight": len(self._in_flight) + len(self._controls),
            "paths": dict(self._paths),
            "organ_count": len(organs),
            "agent_count": len(agents),
            "tasks_processed": sum(a.get("tasks_processed", 0) for a in agents),
            "successes": sum(a.get("successes", 0) for a in agents),
            "failures": sum(a.get("failures", 0) for a in agents),
        }

    async def _ready_if_never_started(self) -> None:
        if not self.initialized and not self.shut_down:
            await self.initialize()


def _agent_key(agent: AgentClient) -> Any:
    """Who an agent is across re-creations: its Ray actor id (a new actor gets a new one,
    while a lost one's name may still hand out its handle), else the client itself."""
    placement = getattr(agent, "placement", None)
    return (placement and placement.actor_id) or id(agent)


def _cap(task: TaskPayload) -> int | None:
    spec = get_handler(task.type)
    return spec.max_attempts if spec else None
