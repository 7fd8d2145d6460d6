"""``manage.py check`` (and every command that runs the checks) refuses a bad SEEDCORE_ORGANS,
and a handler naming an organ SEEDCORE_ORGANS does not have."""

from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register()
def organs_are_valid(app_configs, **kwargs) -> list[checks.CheckMessage]:
    from organism.routing import configured_organs, handler_organs_problem

    try:
        organs = configured_organs()
    except ImproperlyConfigured as exc:
        hint = (
            "a JSON list of {id, kind, agents, types, domains, min_agents, max_agents, "
            "tasks_per_agent, ray}, or unset for three organs (docs/deployment.md)"
        )
        return [checks.Error(str(exc), hint=hint, id="organism.E001")]
    problem = handler_organs_problem(organs)
    if problem:
        hint = "add the organ to SEEDCORE_ORGANS, or fix the handler's organ="
        return [checks.Error(problem, hint=hint, id="organism.E002")]
    return []
