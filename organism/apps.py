from django.apps import AppConfig


class OrganismConfig(AppConfig):
    name = "organism"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from organism import checks  # noqa: F401  (registers the system checks)
