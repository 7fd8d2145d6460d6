"""``manage.py check`` (and every command that runs the checks) refuses a bad SEEDCORE_ORGANS."""

from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register()
def organs_are_valid(app_configs, **kwargs) -> list[checks.CheckMessage]:
    from organism.routing import configured_organs

    try:
        configured_organs()
    except ImproperlyConfigured as exc:
        hint = "a JSON list of {id, kind, agents, types, domains}, or unset for three organs"
        return [checks.Error(str(exc), hint=hint, id="organism.E001")]
    return []
