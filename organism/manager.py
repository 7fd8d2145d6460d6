"""The OrganismManager: owns the organs, routes tasks to agents, serves the control types.

Plain Python, driven by the Coordinator. Organs come from an injected factory (Ray actors in
production, in-process organs in unit tests). Tasks go straight to the chosen agent; a batch is
grouped by agent so each agent gets one call, and outcomes stream back as each task finishes.

Organs scale (:meth:`OrganismManager.tick`, every supervisor round): an organ whose backlog
(its types' due QUEUED and RETRY tasks plus those RUNNING, counted in PostgreSQL by the
supervisor) exceeds what its agents take (``tasks_per_agent`` each) gets agents, up to
``max_agents``; agents idle for the cool-down go, down to ``min_agents``. A new agent is
pending until Ray places it, and tasks go only to placed agents; the types of an organ with
no placed agent are *held* (the supervisor records them in ``queue_controls``, so no
dispatcher claims them) with a sentence saying what is missing (:func:`pending_reason`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from organism.agent import ChunkPace, run_handler, stop
from organism.handlers import (
    HandlerSpec,
    PermanentError,
    TaskCancelled,
    TaskContext,
    bound_organs,
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
from organism.routing import FAST, OrganSpec, Route, choose_organ, least_loaded, organ_types


class OrganClient(Protocol):
    spec: OrganSpec

    async def start(self) -> list[AgentClient]: ...

    async def add_agents(self, count: int) -> list[AgentClient]: ...

    async def remove_agents(self, ids: list[str]) -> list[AgentClient]: ...

    async def status(self) -> dict[str, Any]: ...

    async def shutdown(self) -> int: ...


OrganFactory = Callable[[OrganSpec], Awaitable[OrganClient]]
# The Ray cluster's nodes: [{"node_id", "ip", "alive", "total": {resource: amount},
# "free": {resource: amount}}] (organism.ray.actors.cluster_nodes); memory in bytes.
ClusterView = Callable[[], Awaitable[list[dict[str, Any]]]]

# Scaling decisions are kept this long (and at most this many) for the organism page.
DECISIONS_KEPT_SECONDS = 600.0
DECISIONS_KEPT = 100
# How often a task whose organ has no placed agent looks again, and for how long at most.
PLACEMENT_POLL_SECONDS = 0.5


class OrganismShutDown(Exception):
    pass


class NoPlacedAgent(Exception):
    """The organ has no agent placed on a node yet."""


class OrganismManager:
    def __init__(
        self,
        organs: Sequence[OrganSpec],
        organ_factory: OrganFactory,
        *,
        drift_threshold: float = 0.5,
        default_timeout: float = 300.0,
        rng: random.Random | None = None,
        cluster: ClusterView | None = None,
        scale_down_seconds: float = 60.0,
        placement_timeout: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.specs = list(organs)
        self.drift_threshold = drift_threshold
        self.default_timeout = default_timeout
        self.scale_down_seconds = scale_down_seconds
        self.placement_timeout = placement_timeout
        self._organ_factory = organ_factory
        self._cluster = cluster
        self._clock = clock
        self._rng = rng or random.Random()
        self._placed: set[str] = set()  # agents Ray has placed on a node
        self._statuses: dict[str, dict[str, Any]] = {}  # organ id -> its last status
        self._backlog: dict[str, int] = {}  # task type -> due QUEUED/RETRY + RUNNING
        self._shrinking_since: dict[str, float] = {}  # organ id -> when it first had too many
        self._decisions: deque[dict[str, Any]] = deque(maxlen=DECISIONS_KEPT)
        self._nodes: list[dict[str, Any]] = []
        self._organs: dict[str, OrganClient] = {}
        self._agents: dict[str, list[AgentClient]] = {}
        self._load: Counter[str] = Counter()  # agent id -> tasks in flight
        self._in_flight: dict[str, AgentClient] = {}  # task id -> the agent running it
        self._controls: dict[str, tuple[TaskContext, asyncio.Future]] = {}  # run here
        self._cancelled: set[str] = set()
        self._waiting: set[str] = set()  # tasks waiting for their organ's first placed agent
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
        await self._refresh()

    async def shutdown(self) -> dict[str, Any]:
        """Stop every organ and agent; tasks then fail until initialize() runs."""
        async with self._lock:
            organs, self._organs, self._agents = self._organs, {}, {}
            self._placed, self._statuses = set(), {}
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
        await self._refresh(list(suspects))

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
            except NoPlacedAgent:  # claimed as its organ lost its last agent: wait for one
                jobs.append(asyncio.ensure_future(self._run_when_placed(task, route, finished)))
                continue
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
        pace = ChunkPace()
        try:
            while remaining:
                chunk = [await finished.get()]
                await pace.wait(ready=finished.qsize() + 1, remaining=remaining)
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
        if task_id in self._waiting:
            self._cancelled.add(task_id)  # _run_when_placed answers CANCELLED
            return True
        agent = self._in_flight.get(task_id)
        if agent is None:
            return False
        self._cancelled.add(task_id)
        with contextlib.suppress(Exception):  # a dead agent: its outcome reports that
            await agent.cancel(task_id)
        return True

    def _route(self, task: TaskPayload) -> Route:
        handler_spec = get_handler(task.type)
        specs = [self._organs[organ_id].spec for organ_id in self._organs]
        route = self._choose(task, specs, handler_spec.organ if handler_spec else None)
        if self._has_placed(route.organ_id) or task.type in self._types_of(route.organ_id):
            return route
        # Chosen by domain, drift or at random, for an organ with no agent now (scaled to 0,
        # or waiting for resources): another organ that has one takes it instead.
        ready = [spec for spec in specs if self._has_placed(spec.id)]
        return self._choose(task, ready, None) if ready else route

    def _choose(self, task: TaskPayload, specs: list[OrganSpec], organ: str | None) -> Route:
        return choose_organ(
            task_type=task.type,
            domain=task.domain,
            drift_score=task.drift_score,
            organs=specs,
            threshold=self.drift_threshold,
            pick=self._rng.choice,
            organ=organ,
        )

    def _has_placed(self, organ_id: str) -> bool:
        return any(a.agent_id in self._placed for a in self._agents.get(organ_id, []))

    def _types_of(self, organ_id: str) -> list[str]:
        return organ_types(self.specs, bound_organs()).get(organ_id, [])

    def _pick_agent(self, organ_id: str) -> AgentClient:
        every = self._agents.get(organ_id, [])
        if not every:
            raise NoPlacedAgent(f"organ {organ_id} has no agents")
        # Placed by Ray, and not lost under a task since (until a heal finds it alive).
        agents = {
            agent.agent_id: agent
            for agent in every
            if agent.agent_id in self._placed and _agent_key(agent) not in self._lost_agents
        }
        if not agents:
            raise NoPlacedAgent(f"organ {organ_id} has no placed agent")
        return agents[least_loaded({agent_id: self._load[agent_id] for agent_id in agents})]

    async def _run_when_placed(
        self, task: TaskPayload, route: Route, finished: asyncio.Queue[Outcome]
    ) -> None:
        """Run ``task`` once its organ has a placed agent (the next scaling round adds one:
        the task counts in the backlog as RUNNING), for up to ``placement_timeout``. A task
        lands here only when claimed just as its organ lost its last agent; the supervisor
        holds the type back from the next claims."""
        deadline = self._clock() + self.placement_timeout
        self._waiting.add(task.id)
        try:
            while True:
                if task.id in self._cancelled:
                    self._cancelled.discard(task.id)
                    outcome = Outcome.failure(task, OutcomeStatus.CANCELLED, "cancelled")
                    finished.put_nowait(outcome)
                    return
                try:
                    agent = self._pick_agent(route.organ_id)
                    break
                except NoPlacedAgent as exc:
                    if self._clock() >= deadline:
                        error = f"{exc} within {self.placement_timeout:g} s"
                        outcome = Outcome.failure(
                            task, OutcomeStatus.UNAVAILABLE, error, max_attempts=_cap(task)
                        )
                        finished.put_nowait(outcome)
                        return
                await asyncio.sleep(PLACEMENT_POLL_SECONDS)
                with contextlib.suppress(Exception):  # the organ is healed on the next task
                    await self._refresh([route.organ_id])
        finally:
            self._waiting.discard(task.id)
        self._hold(agent, task.id)
        await self._run_group(agent, route, [task], finished)

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

    async def _refresh(self, organ_ids: list[str] | None = None) -> None:
        """Ask organs (all, or ``organ_ids``) for their status: which agents are placed."""
        ids = [i for i in (organ_ids or list(self._organs)) if i in self._organs]
        organs = [self._organs[organ_id] for organ_id in ids]
        statuses = await asyncio.gather(*(o.status() for o in organs), return_exceptions=True)
        for organ, status in zip(organs, statuses, strict=True):
            if isinstance(status, BaseException):
                status = {
                    "organ_id": organ.spec.id,
                    "kind": organ.spec.kind,
                    "alive": False,
                    "error": str(status),
                    "agent_count": 0,
                    "placed_count": 0,
                    "pending_count": 0,
                    "agents": [],
                    "load": 0,
                }
                self._suspect.add(organ.spec.id)
            self._statuses[organ.spec.id] = status
            if any(not agent.get("alive", True) for agent in status["agents"]):
                self._suspect.add(organ.spec.id)  # replaced on the next task or round
            clients = {agent.agent_id: agent for agent in self._agents.get(organ.spec.id, [])}
            for agent in status["agents"]:
                if agent.get("placed"):
                    self._placed.add(agent["agent_id"])
                    _learn_placement(clients.get(agent["agent_id"]), agent.get("placement"))
                else:
                    self._placed.discard(agent["agent_id"])

    async def status(self) -> list[dict[str, Any]]:
        """Every organ's status (kind, size limits, agents placed or pending, load)."""
        await self._ready_if_never_started()
        await self._refresh()
        return [self._statuses[organ_id] for organ_id in self._organs]

    async def tick(self, backlog: Mapping[str, int]) -> dict[str, Any]:
        """One scaling round: take the backlog per task type (due QUEUED and RETRY plus
        RUNNING), grow or shrink the organs that scale, and answer the summary, whose
        ``holds`` (task type -> why) are the types no dispatcher should claim now."""
        await self._ready_if_never_started()
        self._backlog = {t: int(n) for t, n in backlog.items()}
        if self.initialized:
            await self._refresh()
            if self._suspect:  # dead agents (a lost node, say) are replaced: pending if need be
                with contextlib.suppress(Exception):
                    await self._heal()
            for organ_id in list(self._organs):
                await self._scale(organ_id)
        if self._cluster is not None:
            try:
                self._nodes = await self._cluster()
            except Exception as exc:  # the summary goes out without the nodes
                self._nodes = [{"error": f"{type(exc).__name__}: {exc}"}]
        return self._view()

    def organ_backlog(self, organ_id: str) -> int:
        return sum(self._backlog.get(t, 0) for t in self._types_of(organ_id))

    async def _scale(self, organ_id: str) -> None:
        organ = self._organs[organ_id]
        spec = organ.spec
        if not spec.scales:
            return
        agents = self._agents.get(organ_id, [])
        size, backlog = len(agents), self.organ_backlog(organ_id)
        wanted = math.ceil(backlog / spec.tasks_per_agent)
        target = min(max(wanted, spec.min_agents), spec.max_agents)
        if target > size:
            self._shrinking_since.pop(organ_id, None)
            self._agents[organ_id] = await organ.add_agents(target - size)
            self._decide(organ_id, size, target, _grow_reason(spec, backlog, size))
            await self._refresh([organ_id])
            return
        if target == size:
            self._shrinking_since.pop(organ_id, None)
            return
        now = self._clock()
        since = self._shrinking_since.setdefault(organ_id, now)
        if now - since < self.scale_down_seconds:
            return
        # Pending agents first (they take nothing), then placed ones with nothing running.
        pending = [a.agent_id for a in agents if a.agent_id not in self._placed]
        idle = [
            a.agent_id for a in agents if a.agent_id in self._placed and not self._load[a.agent_id]
        ]
        going = (pending + idle)[: size - target]
        if not going:
            return
        for agent_id in going:
            self._placed.discard(agent_id)
        self._agents[organ_id] = await organ.remove_agents(going)
        after = len(self._agents[organ_id])
        reason = (
            f"backlog {backlog} needs {target} agent{_s(target)}; "
            f"{len(going)} idle for {self.scale_down_seconds:g} s"
        )
        self._decide(organ_id, size, after, reason)
        self._shrinking_since.pop(organ_id, None)
        await self._refresh([organ_id])

    def _decide(self, organ_id: str, before: int, after: int, reason: str) -> None:
        self._decisions.append(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "organ_id": organ_id,
                "from": before,
                "to": after,
                "reason": reason,
                "_clock": self._clock(),
            }
        )

    def decisions(self) -> list[dict[str, Any]]:
        """The scaling decisions of the last DECISIONS_KEPT_SECONDS, newest first."""
        horizon = self._clock() - DECISIONS_KEPT_SECONDS
        return [
            {k: v for k, v in d.items() if not k.startswith("_")}
            for d in reversed(self._decisions)
            if d["_clock"] >= horizon
        ]

    def holds(self) -> dict[str, str]:
        """Task type -> why no dispatcher should claim it now: every organ its tasks go to
        has no placed agent (pending placement, or none yet)."""
        if not self.initialized:
            return {}
        held = {}
        for task_type, organ_ids in sorted(self._serving().items()):
            present = [i for i in organ_ids if i in self._organs]
            if present and not any(self._has_placed(i) for i in present):
                held[task_type] = self._pending_reason(present[0])
        return held

    def organ_full(self) -> dict[str, str]:
        """Task type -> why its QUEUED tasks wait although agents are placed: every organ its
        tasks go to scales, is at ``max_agents``, and runs its ``tasks_per_agent`` on each
        agent. (An organ of fixed size has no such target: its agents take what comes.)"""
        if not self.initialized:
            return {}
        full = {}
        for task_type, organ_ids in sorted(self._serving().items()):
            reasons = [self._full_reason(i) for i in organ_ids if i in self._organs]
            if reasons and all(reasons):
                full[task_type] = reasons[0]
        return full

    def _full_reason(self, organ_id: str) -> str | None:
        spec = self._organs[organ_id].spec
        placed = [a for a in self._agents.get(organ_id, []) if a.agent_id in self._placed]
        if not spec.scales or len(placed) < spec.max_agents:
            return None
        running = sum(self._load[agent.agent_id] for agent in placed)
        if running < len(placed) * spec.tasks_per_agent:
            return None
        return (
            f"organ {organ_id} is at its max_agents ({spec.max_agents}) with every agent busy "
            f"({running} running, {spec.tasks_per_agent} per agent)"
        )

    def _serving(self) -> dict[str, list[str]]:
        """Task type -> the organs its tasks go to."""
        serving: dict[str, list[str]] = {}
        for organ_id, types in organ_types(self.specs, bound_organs()).items():
            for task_type in types:
                serving.setdefault(task_type, []).append(organ_id)
        return serving

    def _pending_reason(self, organ_id: str) -> str:
        spec = self._organs[organ_id].spec
        status = self._statuses.get(organ_id, {})
        return pending_reason(
            spec,
            pending=status.get("pending_count", 0),
            agents=len(self._agents.get(organ_id, [])),
            nodes=self._nodes,
        )

    def _view(self) -> dict[str, Any]:
        organs = []
        decisions = self.decisions()
        for organ_id in self._organs:
            status = dict(self._statuses.get(organ_id) or {"organ_id": organ_id, "agents": []})
            per_node: Counter[str] = Counter(
                a.get("node_id") or "unknown" for a in status["agents"] if a.get("placed")
            )
            status.update(
                backlog=self.organ_backlog(organ_id),
                routed_types=self._types_of(organ_id),
                agents_per_node=dict(per_node),
                pending_reason=(
                    self._pending_reason(organ_id) if status.get("pending_count") else None
                ),
                decisions=[d for d in decisions if d["organ_id"] == organ_id],
            )
            organs.append(status)
        return {
            "initialized": self.initialized,
            "organ_count": len(organs),
            "total_agent_count": sum(organ.get("agent_count", 0) for organ in organs),
            "organs": organs,
            "nodes": list(self._nodes),
            "scaling": decisions,
            "holds": self.holds(),
            "organ_full": self.organ_full(),
        }

    async def summary(self) -> dict[str, Any]:
        """Organs (agents placed per node, pending and why, backlog, size limits, recent
        scaling), the cluster's nodes, and the held types: ``get_organism_summary``."""
        await self._ready_if_never_started()
        await self._refresh()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._nodes = await self._cluster()
        return self._view()

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


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _grow_reason(spec: OrganSpec, backlog: int, size: int) -> str:
    capacity = size * spec.tasks_per_agent
    if backlog > capacity:
        return f"backlog {backlog} > capacity {capacity} ({spec.tasks_per_agent} per agent)"
    return f"min_agents is {spec.min_agents}"


# How a resource is named in a sentence, and how its amounts read.
def _amount(resource: str, amount: float) -> str:
    if resource == "memory":
        return f"{amount / 2**30:.1f} GiB" if amount else "0 GiB"
    return f"{amount:g}"


def _needs(resource: str, amount: float) -> str:
    if resource == "memory":
        return f"{_amount(resource, amount)} of memory"
    if resource in ("CPU", "GPU"):
        return f"{amount:g} {resource}{'' if amount == 1 else 's'}"
    return f"{amount:g} of resource {resource!r}"


def requirements(spec: OrganSpec) -> dict[str, float]:
    """What one agent of the organ asks Ray for, by Ray's resource names."""
    ray = spec.ray
    needs: dict[str, float] = {}
    if ray.get("num_gpus"):
        needs["GPU"] = ray["num_gpus"]
    if ray.get("num_cpus"):
        needs["CPU"] = ray["num_cpus"]
    if ray.get("memory"):
        needs["memory"] = ray["memory"]
    needs.update({k: v for k, v in (ray.get("resources") or {}).items() if v})
    return needs


def pending_reason(
    spec: OrganSpec, *, pending: int, agents: int, nodes: list[dict[str, Any]]
) -> str:
    """Why the organ has no placed agent (or some pending), in one sentence: each resource an
    agent needs that no node has free, against what the cluster has free of its total, and
    how many agents wait for placement; e.g. "needs 1 GPU; the cluster has 0 of 0 free;
    1 agent pending placement"."""
    alive = [n for n in nodes if n.get("alive", True) and "total" in n]
    parts = []
    for resource, amount in requirements(spec).items():
        best = max((n.get("free", {}).get(resource, 0) for n in alive), default=0)
        if best >= amount:
            continue
        free = sum(n.get("free", {}).get(resource, 0) for n in alive)
        total = sum(n.get("total", {}).get(resource, 0) for n in alive)
        parts.append(
            f"needs {_needs(resource, amount)}; the cluster has {_amount(resource, free)} of "
            f"{_amount(resource, total)} free"
        )
    if pending:
        parts.append(f"{pending} agent{_s(pending)} pending placement")
    elif not agents:
        parts.append(f"organ {spec.id} has no agents yet; one is added for its due tasks")
    else:
        parts.append(f"organ {spec.id}'s agents are starting")
    return "; ".join(parts)


def _learn_placement(client: AgentClient | None, placement: list | None) -> None:
    """An agent created without waiting for Ray to place it learns where it runs (what a
    SYSTEM failure's run names) from its first state once placed."""
    if client is not None and placement and getattr(client, "placement", None) is None:
        with contextlib.suppress(AttributeError):
            client.placement = Placement(*placement)


def _agent_key(agent: AgentClient) -> Any:
    """Who an agent is across re-creations: its Ray actor id (a new actor gets a new one,
    while a lost one's name may still hand out its handle), else the client itself."""
    placement = getattr(agent, "placement", None)
    return (placement and placement.actor_id) or id(agent)


def _cap(task: TaskPayload) -> int | None:
    spec = get_handler(task.type)
    return spec.max_attempts if spec else None
