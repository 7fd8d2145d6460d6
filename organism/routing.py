"""Where a task runs: pure decisions, no Ray, no database.

- ``drift_score`` at or above the threshold: the escalated path, to the cognitive organ.
- Otherwise the fast path, to an organ listing the task's type, else one listing its domain,
  else (a type no organ lists) a random organ.
- Within the organ, the least-loaded agent.

Organ specs come from settings (``SEEDCORE_ORGANS``, parsed by :func:`configured_organs`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class OrganSpec:
    id: str
    kind: str
    agents: int = 2
    types: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["types"], out["domains"] = list(self.types), list(self.domains)
        return out


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
) -> Route:
    """The organ a task goes to, and by which path. ``organs`` must not be empty."""
    if not organs:
        raise ValueError("the organism has no organs")
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
    """Validate organ specs given as plain dicts; ValueError names the bad field."""
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
        if not isinstance(kind, str) or not kind.strip():
            raise ValueError(f"{where} ({organ_id}): 'kind' must be a non-empty string")
        agents = item.get("agents", default_agents)
        if isinstance(agents, bool) or not isinstance(agents, int) or agents < 1:
            raise ValueError(f"{where} ({organ_id}): 'agents' must be a whole number >= 1")
        lists = {}
        for key in ("types", "domains"):
            values = item.get(key, [])
            if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"{where} ({organ_id}): '{key}' must be a list of strings")
            lists[key] = tuple(values)
        organs.append(OrganSpec(organ_id, kind, agents, lists["types"], lists["domains"]))
    return organs


def organs_from_text(text: str, *, default_agents: int = 2) -> tuple[OrganSpec, ...]:
    """Organ specs from SEEDCORE_ORGANS's text, a JSON list of {id, kind, agents, types,
    domains}; blank, the default three organs. ValueError says what is wrong."""
    raw = json.loads(text) if text.strip() else list(DEFAULT_ORGANS)
    return tuple(parse_organs(raw, default_agents=default_agents))


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
