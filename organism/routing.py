"""Where a task runs: pure decisions, no Ray, no database.

- ``drift_score`` at or above the threshold: the escalated path, to the cognitive organ.
- Otherwise the fast path, to an organ listing the task's type, else one listing its domain,
  else (a type no organ lists) a random organ.
- A handler that names its organ (``@handler("embed", organ="gpu_organ_1")``) always goes
  there: the organ is where the resources it needs are.
- Within the organ, the least-loaded placed agent.

Organ specs come from settings (``SEEDCORE_ORGANS``, parsed by :func:`configured_organs`). An
organ keeps between ``min_agents`` and ``max_agents`` agents (both ``agents`` unless given:
a fixed size), aiming at ``tasks_per_agent`` tasks per agent, each agent created with the
organ's ``ray`` actor options (:data:`RAY_OPTION_KEYS`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

FAST = "fast"
ESCALATED = "escalated"
COGNITIVE = "cognitive"

DEFAULT_ORGANS: tuple[dict[str, Any], ...] = (
    {
        "id": "cognitive_organ_1",
        "kind": COGNITIVE,
        "types": ["test"],
        "domains": ["planning", "reasoning", "analysis"],
    },
    {
        "id": "actuator_organ_1",
        "kind": "actuator",
        "types": ["sleep"],
        "domains": ["action", "io", "robotics"],
    },
    {
        "id": "utility_organ_1",
        "kind": "utility",
        "types": ["echo", "fail"],
        "domains": ["utility", "maintenance"],
    },
)


# The keys an organ spec may have; anything else is a typo, refused with its name.
ORGAN_KEYS = (
    "id", "kind", "agents", "types", "domains",
    "min_agents", "max_agents", "tasks_per_agent", "ray",
)  # fmt: skip
# The Ray actor options an organ may set for its agents (``label_selector`` only where the
# installed Ray has it: see :func:`ray_option_keys`).
RAY_OPTION_KEYS = ("num_cpus", "num_gpus", "memory", "resources", "runtime_env")
# Ray's own resource names, which ``resources`` may not hold (Ray refuses them there).
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


@dataclass(frozen=True)
class OrganSpec:
    id: str
    kind: str
    agents: int = 2  # how many agents it starts with
    types: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    min_agents: int | None = None  # None: ``agents`` (a fixed-size organ)
    max_agents: int | None = None  # None: max(``agents``, ``min_agents``)
    tasks_per_agent: int = 1  # the target of concurrent tasks per agent when scaling
    ray: Mapping[str, Any] = field(default_factory=dict)  # actor options for its agents

    def __post_init__(self) -> None:
        if self.min_agents is None:
            object.__setattr__(self, "min_agents", self.agents)
        if self.max_agents is None:
            object.__setattr__(self, "max_agents", max(self.agents, self.min_agents))

    @property
    def scales(self) -> bool:
        """Whether the organ's size follows its backlog (min_agents < max_agents)."""
        return self.min_agents < self.max_agents

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "agents": self.agents,
            "types": list(self.types),
            "domains": list(self.domains),
            "min_agents": self.min_agents,
            "max_agents": self.max_agents,
            "tasks_per_agent": self.tasks_per_agent,
            "ray": dict(self.ray),
        }


@dataclass(frozen=True)
class Route:
    path: str  # FAST or ESCALATED
    organ_id: str


def choose_organ(
    *,
    task_type: str,
    domain: str | None,
    drift_score: float | None,
    organs: Sequence[OrganSpec],
    threshold: float,
    pick: Callable[[Sequence[OrganSpec]], OrganSpec] = random.choice,
    organ: str | None = None,
) -> Route:
    """The organ a task goes to, and by which path. ``organs`` must not be empty; ``organ``
    is the one its handler names, if any (it wins: that is where its resources are)."""
    if not organs:
        raise ValueError("the organism has no organs")
    if organ is not None:
        if not any(spec.id == organ for spec in organs):
            raise ValueError(f"the handler of {task_type!r} names organ {organ!r}, which is absent")
        return Route(FAST, organ)
    if (drift_score or 0.0) >= threshold:
        cognitive = [organ for organ in organs if organ.kind == COGNITIVE]
        if cognitive:
            return Route(ESCALATED, pick(cognitive).id)
    serving = [organ for organ in organs if task_type in organ.types]
    if not serving and domain:
        serving = [organ for organ in organs if domain in organ.domains]
    return Route(FAST, pick(serving or list(organs)).id)


def least_loaded(loads: Mapping[str, int]) -> str:
    """The agent with the fewest tasks in flight; ties go to the first listed."""
    if not loads:
        raise ValueError("the organ has no agents")
    return min(loads, key=loads.__getitem__)


def parse_organs(raw: Sequence[Mapping[str, Any]], *, default_agents: int = 2) -> list[OrganSpec]:
    """Validate organ specs given as plain dicts; ValueError names the organ and the bad key."""
    if not isinstance(raw, list | tuple) or not raw:
        raise ValueError("expected a non-empty list of organs")
    organs, seen = [], set()
    for index, item in enumerate(raw):
        where = f"organ {index}"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where} must be an object")
        organ_id, kind = item.get("id"), item.get("kind")
        if not isinstance(organ_id, str) or not organ_id.strip():
            raise ValueError(f"{where}: 'id' must be a non-empty string")
        if organ_id in seen:
            raise ValueError(f"{where}: duplicate id {organ_id!r}")
        seen.add(organ_id)
        where = f"{where} ({organ_id})"
        unknown = sorted(set(item) - set(ORGAN_KEYS))
        if unknown:
            raise ValueError(
                f"{where}: unknown key {unknown[0]!r}; an organ has {', '.join(ORGAN_KEYS)}"
            )
        if not isinstance(kind, str) or not kind.strip():
            raise ValueError(f"{where}: 'kind' must be a non-empty string")
        lists = {}
        for key in ("types", "domains"):
            values = item.get(key, [])
            if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"{where}: '{key}' must be a list of strings")
            lists[key] = tuple(values)
        sizes = _sizes(item, where, default_agents)
        ray_options = parse_ray_options(item.get("ray", {}), where)
        organs.append(
            OrganSpec(
                organ_id,
                kind,
                sizes["agents"],
                lists["types"],
                lists["domains"],
                sizes["min_agents"],
                sizes["max_agents"],
                sizes["tasks_per_agent"],
                ray_options,
            )  # fmt: skip
        )
    return organs


def _whole(item: Mapping[str, Any], key: str, where: str, minimum: int) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: '{key}' must be a whole number >= {minimum}")
    return value


def _sizes(item: Mapping[str, Any], where: str, default_agents: int) -> dict[str, int]:
    """agents, min_agents, max_agents and tasks_per_agent, checked against each other.

    Only ``agents`` (or nothing): a fixed size, as before organs scaled. ``min_agents``
    defaults to ``agents`` (else the default size, capped by ``max_agents``); ``max_agents``
    to the larger of ``agents`` (else the default size) and ``min_agents``; an organ starts
    with ``agents`` if given, else ``min_agents``.
    """
    # An organ may start empty only if it says it may be (min_agents 0).
    agents = _whole(item, "agents", where, 0 if item.get("min_agents") == 0 else 1)
    low = _whole(item, "min_agents", where, 0)
    high = _whole(item, "max_agents", where, 1)
    per_agent = _whole(item, "tasks_per_agent", where, 1) or 1
    size = agents if agents is not None else default_agents
    if low is None:
        low = size if high is None else min(size, high)
    if high is None:
        high = max(size, low)
    if low > high:
        raise ValueError(f"{where}: 'min_agents' ({low}) must not exceed 'max_agents' ({high})")
    if agents is None:
        agents = low
    elif not low <= agents <= high:
        raise ValueError(
            f"{where}: 'agents' ({agents}) must lie between 'min_agents' ({low}) and "
            f"'max_agents' ({high})"
        )
    return {"agents": agents, "min_agents": low, "max_agents": high, "tasks_per_agent": per_agent}


def ray_option_keys() -> tuple[str, ...]:
    """The ``ray`` keys an organ may set: :data:`RAY_OPTION_KEYS`, plus ``label_selector``
    when the installed Ray schedules actors by node labels (2.49 and later)."""
    try:
        major, minor = (int(part) for part in metadata.version("ray").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return RAY_OPTION_KEYS
    return (*RAY_OPTION_KEYS, "label_selector") if (major, minor) >= (2, 49) else RAY_OPTION_KEYS


def parse_ray_options(raw: Any, where: str) -> dict[str, Any]:
    """An organ's ``ray`` object, checked key by key; ValueError names the bad key."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: 'ray' must be an object of Ray actor options")
    allowed = ray_option_keys()
    options: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{where}: 'ray.{key}'"
        if key not in allowed:
            raise ValueError(f"{name} is not supported; 'ray' may hold {', '.join(allowed)}")
        if key in ("num_cpus", "num_gpus"):
            if not _number(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
        elif key == "memory":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of bytes >= 1")
        elif key == "resources":
            if not isinstance(value, Mapping):
                raise ValueError(f"{name} must be an object of resource name to amount")
            for resource, amount in value.items():
                if not isinstance(resource, str) or not resource:
                    raise ValueError(f"{name} has a resource name that is not a string")
                if resource in RAY_BUILTIN_RESOURCES:
                    raise ValueError(
                        f"{name} may not hold {resource!r}; use num_cpus, num_gpus or memory"
                    )
                if not _number(amount) or amount < 0:
                    raise ValueError(f"{where}: 'ray.resources.{resource}' must be a number >= 0")
            value = dict(value)
        elif key == "runtime_env":
            if not isinstance(value, Mapping):
                raise ValueError(f"{name} must be an object (a Ray runtime_env)")
            value = dict(value)
        elif key == "label_selector":
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ValueError(f"{name} must be an object of label name to value (strings)")
            value = dict(value)
        options[key] = value
    return options


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def organs_from_text(text: str, *, default_agents: int = 2) -> tuple[OrganSpec, ...]:
    """Organ specs from SEEDCORE_ORGANS's text, a JSON list of {id, kind, agents, types,
    domains, min_agents, max_agents, tasks_per_agent, ray}; blank, the default three organs.
    ValueError says what is wrong."""
    raw = json.loads(text) if text.strip() else list(DEFAULT_ORGANS)
    return tuple(parse_organs(raw, default_agents=default_agents))


def check_bound_organs(organs: Sequence[OrganSpec], bound: Mapping[str, str]) -> None:
    """ValueError naming the handler and the organs if a handler names an organ that is not
    configured (``bound``: task type -> organ id, as organism.handlers.bound_organs)."""
    known = {organ.id for organ in organs}
    for task_type, organ_id in sorted(bound.items()):
        if organ_id not in known:
            raise ValueError(
                f"the handler of {task_type!r} names organ {organ_id!r}, but SEEDCORE_ORGANS "
                f"has only {', '.join(sorted(known))}"
            )


def handler_organs_problem(organs: Sequence[OrganSpec]) -> str | None:
    """What is wrong with the organs the registered handlers name (after autodiscover), or
    None: ``manage.py check`` and ``rundispatcher`` refuse to start on it."""
    from organism.handlers import autodiscover, bound_organs

    autodiscover()
    try:
        check_bound_organs(organs, bound_organs())
    except ValueError as exc:
        return str(exc)
    return None


def organ_types(organs: Sequence[OrganSpec], bound: Mapping[str, str]) -> dict[str, list[str]]:
    """Organ id -> the task types whose tasks go there whatever their domain or drift: those
    a handler binds to it, and those it lists that no handler binds elsewhere. What an organ's
    backlog is counted from, and what is held back while it has no placed agent."""
    out: dict[str, set[str]] = {organ.id: set() for organ in organs}
    for organ in organs:
        out[organ.id].update(t for t in organ.types if t not in bound)
    for task_type, organ_id in bound.items():
        if organ_id in out:
            out[organ_id].add(task_type)
    return {organ_id: sorted(types) for organ_id, types in out.items()}


def configured_organs() -> tuple[OrganSpec, ...]:
    """The organs the settings name (SEEDCORE_ORGANS, each with SEEDCORE_AGENTS_PER_ORGAN
    agents unless it says otherwise); ImproperlyConfigured names the variable if it is bad.
    The Coordinator builds its organism from these, and ``rundispatcher`` and ``manage.py
    check`` refuse a bad value before anything starts."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        return organs_from_text(
            settings.SEEDCORE_ORGANS, default_agents=settings.SEEDCORE_AGENTS_PER_ORGAN
        )
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ImproperlyConfigured(f"SEEDCORE_ORGANS is invalid: {exc}") from None
