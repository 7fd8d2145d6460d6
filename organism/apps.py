from django.apps import AppConfig


class OrganismConfig(AppConfig):
    name = "organism"
    default_auto_field = "django.db.models.BigAutoField"
