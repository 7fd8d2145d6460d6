"""Where a task runs: pure decisions, no Ray, no database.

- ``drift_score`` at or above the threshold: the escalated path, to the cognitive organ.
- Otherwise the fast path, to an organ listing the task's type, else one listing its domain,
  else (a type no organ lists) a random organ.
- Within the organ, the least-loaded agent.

Organ specs come from settings (``SEEDCORE_ORGANS``, parsed by :func:`organs_from_env`).
"""

from __future__ import annotations

import json
import os
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


def organs_from_env(environ: Mapping[str, str] = os.environ) -> tuple[OrganSpec, ...]:
    """SEEDCORE_ORGANS (a JSON list of {id, kind, agents, types, domains}) or the default
    three organs, each with SEEDCORE_AGENTS_PER_ORGAN agents (default 2)."""
    from django.core.exceptions import ImproperlyConfigured

    from seedcore_site.env import env_int

    default_agents = env_int("SEEDCORE_AGENTS_PER_ORGAN", 2, minimum=1, environ=environ)
    raw_text = environ.get("SEEDCORE_ORGANS", "").strip()
    try:
        raw = json.loads(raw_text) if raw_text else list(DEFAULT_ORGANS)
        return tuple(parse_organs(raw, default_agents=default_agents))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ImproperlyConfigured(f"SEEDCORE_ORGANS is invalid: {exc}") from None
