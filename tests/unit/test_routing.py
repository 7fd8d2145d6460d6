"""Routing decisions and organ specs: pure functions, no Ray."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ImproperlyConfigured

from organism.routing import (
    DEFAULT_ORGANS,
    ESCALATED,
    FAST,
    OrganSpec,
    Route,
    choose_organ,
    configured_organs,
    least_loaded,
    organs_from_text,
    parse_organs,
)

ORGANS = [
    OrganSpec("cog", "cognitive", 2, types=("test",), domains=("planning",)),
    OrganSpec("act", "actuator", 2, types=("sleep",), domains=("io",)),
    OrganSpec("util", "utility", 2, types=("echo",), domains=("maintenance",)),
]


def route(type: str, *, domain: str | None = None, drift: float = 0.0, organs=ORGANS) -> Route:
    return choose_organ(
        task_type=type,
        domain=domain,
        drift_score=drift,
        organs=organs,
        threshold=0.5,
        pick=lambda candidates: candidates[-1],  # deterministic: the last candidate
    )


def test_fast_path_goes_to_the_organ_serving_the_type():
    assert route("echo") == Route(FAST, "util")
    assert route("sleep", domain="planning") == Route(FAST, "act")  # type wins over domain


def test_domain_decides_when_no_organ_lists_the_type():
    assert route("resize", domain="io") == Route(FAST, "act")


def test_unknown_type_and_domain_go_to_a_random_organ():
    seen = {
        choose_organ(
            task_type="resize",
            domain=None,
            drift_score=0,
            organs=ORGANS,
            threshold=0.5,
            pick=lambda candidates, i=i: candidates[i],
        ).organ_id
        for i in range(3)
    }
    assert seen == {"cog", "act", "util"}


def test_drift_at_or_above_threshold_escalates_to_the_cognitive_organ():
    assert route("echo", drift=0.5) == Route(ESCALATED, "cog")
    assert route("echo", drift=0.99) == Route(ESCALATED, "cog")
    assert route("echo", drift=0.49) == Route(FAST, "util")
    assert route("echo", drift=None) == Route(FAST, "util")


def test_escalation_without_a_cognitive_organ_falls_back_to_the_fast_path():
    assert route("echo", drift=0.9, organs=ORGANS[1:]) == Route(FAST, "util")


def test_no_organs_is_an_error():
    with pytest.raises(ValueError, match="no organs"):
        route("echo", organs=[])


def test_least_loaded_agent():
    assert least_loaded({"a": 3, "b": 1, "c": 2}) == "b"
    assert least_loaded({"a": 0, "b": 0}) == "a"
    with pytest.raises(ValueError):
        least_loaded({})


def test_parse_organs_defaults_and_validation():
    specs = parse_organs([{"id": "x", "kind": "utility", "types": ["echo"]}], default_agents=3)
    assert specs == [OrganSpec("x", "utility", 3, ("echo",), ())]
    assert parse_organs([specs[0].as_dict()]) == specs  # as_dict round-trips
    for bad, message in [
        ([], "non-empty list"),
        ([{"kind": "utility"}], "'id'"),
        ([{"id": "x", "kind": "u"}, {"id": "x", "kind": "u"}], "duplicate id 'x'"),
        ([{"id": "x"}], "'kind'"),
        ([{"id": "x", "kind": "u", "agents": 0}], "'agents'"),
        ([{"id": "x", "kind": "u", "types": "echo"}], "'types'"),
        (["x"], "must be an object"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_organs(bad)


def test_blank_text_is_the_default_three_organs():
    specs = organs_from_text("")
    assert [(s.id, s.kind, s.agents) for s in specs] == [
        ("cognitive_organ_1", "cognitive", 2),
        ("actuator_organ_1", "actuator", 2),
        ("utility_organ_1", "utility", 2),
    ]
    assert len(DEFAULT_ORGANS) == 3
    assert all(s.types and s.domains for s in specs)
    assert {s.agents for s in organs_from_text(" ", default_agents=1)} == {1}


def test_configured_organs_reads_the_settings_and_names_the_variable_when_bad(settings):
    settings.SEEDCORE_ORGANS = json.dumps([{"id": "only", "kind": "cognitive", "types": ["test"]}])
    settings.SEEDCORE_AGENTS_PER_ORGAN = 3
    assert configured_organs() == (OrganSpec("only", "cognitive", 3, ("test",), ()),)
    settings.SEEDCORE_ORGANS = "not json"
    with pytest.raises(ImproperlyConfigured, match="SEEDCORE_ORGANS is invalid"):
        configured_organs()
    settings.SEEDCORE_ORGANS = '[{"id": "x"}]'
    with pytest.raises(ImproperlyConfigured, match="SEEDCORE_ORGANS is invalid: organ 0"):
        configured_organs()


def test_manage_py_check_reports_a_bad_seedcore_organs(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.SEEDCORE_ORGANS = '[{"id": "x"}]'
    with pytest.raises(SystemCheckError, match=r"organism\.E001.*SEEDCORE_ORGANS is invalid"):
        call_command("check")


def test_rundispatcher_refuses_a_bad_seedcore_organs_before_starting_anything(settings):
    from organism.supervisor import SupervisorError, check_organs

    settings.SEEDCORE_ORGANS = "[{"
    with pytest.raises(SupervisorError, match="SEEDCORE_ORGANS is invalid"):
        check_organs()
