"""Organ specs with sizes and Ray options, and handlers bound to an organ: pure, no Ray."""

from __future__ import annotations

import json

import pytest

from organism import handlers
from organism.handlers import handler
from organism.routing import (
    FAST,
    OrganSpec,
    check_bound_organs,
    choose_organ,
    organ_types,
    organs_from_text,
    parse_organs,
)

GPU = {
    "id": "gpu_organ_1",
    "kind": "utility",
    "types": ["embed"],
    "min_agents": 0,
    "max_agents": 4,
    "ray": {"num_gpus": 1, "resources": {"model_x": 1}, "memory": 2**30},
}


def test_the_issue_example_parses_and_round_trips():
    (spec,) = parse_organs([GPU])
    assert (spec.agents, spec.min_agents, spec.max_agents, spec.tasks_per_agent) == (0, 0, 4, 1)
    assert spec.scales
    assert spec.ray == {"num_gpus": 1, "resources": {"model_x": 1}, "memory": 2**30}
    assert parse_organs([spec.as_dict()]) == [spec]


def test_todays_specs_keep_a_fixed_size():
    specs = organs_from_text("", default_agents=2)
    assert all((s.min_agents, s.max_agents, s.agents) == (2, 2, 2) for s in specs)
    assert not any(s.scales for s in specs)
    (fixed,) = parse_organs([{"id": "x", "kind": "u", "agents": 3}])
    assert (fixed.min_agents, fixed.max_agents, fixed.ray) == (3, 3, {})


def test_sizes_default_from_each_other():
    (grows,) = parse_organs([{"id": "x", "kind": "u", "agents": 1, "max_agents": 5}])
    assert (grows.agents, grows.min_agents, grows.max_agents) == (1, 1, 5)
    (only_max,) = parse_organs([{"id": "x", "kind": "u", "max_agents": 6}], default_agents=2)
    assert (only_max.agents, only_max.min_agents, only_max.max_agents) == (2, 2, 6)
    (zero,) = parse_organs([{"id": "x", "kind": "u", "min_agents": 0}], default_agents=2)
    assert (zero.agents, zero.min_agents, zero.max_agents) == (0, 0, 2)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_agents": 0}, r"organ 0 \(gpu_organ_1\): 'max_agents' must be a whole number >= 1"),
        ({"min_agents": -1}, r"'min_agents' must be a whole number >= 0"),
        ({"min_agents": 5}, r"'min_agents' \(5\) must not exceed 'max_agents' \(4\)"),
        ({"agents": 9}, r"'agents' \(9\) must lie between 'min_agents' \(0\) and 'max_agents'"),
        ({"tasks_per_agent": 0}, r"'tasks_per_agent' must be a whole number >= 1"),
        ({"max_agent": 3}, r"gpu_organ_1\): unknown key 'max_agent'"),
        ({"ray": []}, r"'ray' must be an object"),
        ({"ray": {"num_gpu": 1}}, r"'ray.num_gpu' is not supported; 'ray' may hold num_cpus"),
        ({"ray": {"num_gpus": -1}}, r"'ray.num_gpus' must be a number >= 0"),
        ({"ray": {"num_cpus": "2"}}, r"'ray.num_cpus' must be a number >= 0"),
        ({"ray": {"memory": 1.5}}, r"'ray.memory' must be a whole number of bytes"),
        ({"ray": {"resources": {"GPU": 1}}}, r"'ray.resources' may not hold 'GPU'"),
        ({"ray": {"resources": {"model_x": -1}}}, r"'ray.resources.model_x' must be a number"),
        ({"ray": {"runtime_env": "pip"}}, r"'ray.runtime_env' must be an object"),
        ({"ray": {"label_selector": {"gpu": 1}}}, r"'ray.label_selector' must be an object"),
    ],
)
def test_a_bad_spec_names_the_organ_and_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        parse_organs([{**GPU, **change}])


def test_label_selector_is_accepted_by_the_installed_ray():
    (spec,) = parse_organs([{**GPU, "ray": {"label_selector": {"ray.io/accelerator": "A100"}}}])
    assert spec.ray["label_selector"] == {"ray.io/accelerator": "A100"}


def test_manage_py_check_refuses_a_bad_organ_spec(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.SEEDCORE_ORGANS = json.dumps([{**GPU, "ray": {"num_gpus": "one"}}])
    with pytest.raises(SystemCheckError, match=r"gpu_organ_1\): 'ray.num_gpus' must be"):
        call_command("check")


def test_a_handler_routes_its_type_to_the_organ_it_names(registry):
    handler("embed_test", organ="gpu")(lambda params, ctx: params)
    organs = [
        OrganSpec("util", "utility", 2, types=("echo",)),
        OrganSpec("cog", "cognitive", 2, types=("embed_test",)),
        OrganSpec("gpu", "utility", 0, min_agents=0, max_agents=4),
    ]
    route = choose_organ(
        task_type="embed_test", domain="planning", drift_score=0.9, organs=organs,
        threshold=0.5, organ=handlers.get_handler("embed_test").organ,
    )  # fmt: skip
    assert (route.path, route.organ_id) == (FAST, "gpu")  # wins over drift and the types list
    types = organ_types(organs, handlers.bound_organs())
    assert types["gpu"] == ["embed_test"] and "embed_test" not in types["cog"]
    assert types["util"] == ["echo"]


def test_an_unknown_organ_is_refused_at_start(registry, settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    from organism.supervisor import SupervisorError, check_organs

    with pytest.raises(ValueError, match="names organ 'nope', but SEEDCORE_ORGANS has only"):
        check_bound_organs([OrganSpec("a", "u")], {"embed": "nope"})
    settings.SEEDCORE_ORGANS = ""
    handler("embed_nowhere", organ="gpu_organ_9")(lambda params, ctx: params)
    with pytest.raises(SupervisorError, match="'embed_nowhere' names organ 'gpu_organ_9'"):
        check_organs()
    with pytest.raises(SystemCheckError, match=r"organism\.E002.*gpu_organ_9"):
        call_command("check")


def test_handler_organ_must_be_a_name_and_not_on_a_control_type():
    with pytest.raises(ValueError, match="organ must be an organ's id"):
        handler("x_bad_organ", organ="")
    with pytest.raises(ValueError, match="control type runs on the Coordinator"):
        handler("x_control_organ", organ="gpu", control=True)


def test_agents_are_created_with_the_organs_ray_options():
    from organism.ray.actors import ORGANISM_OPTIONS, agent_options

    (default,) = parse_organs([{"id": "x", "kind": "u"}])
    assert agent_options(default) == ORGANISM_OPTIONS  # today's sliver of CPU, spread
    (gpu,) = parse_organs([{**GPU, "ray": {**GPU["ray"], "num_cpus": 2}}])
    assert agent_options(gpu) == {
        "num_cpus": 2,
        "num_gpus": 1,
        "memory": 2**30,
        "resources": {"model_x": 1},
        "scheduling_strategy": "SPREAD",
    }
