"""What the Ray side publishes for the web to read (see ``organism.status``)."""

from django.db import models
from django.db.models.functions import Now


class CoordinatorStatus(models.Model):
    """The Coordinator's health and the organism, as ``rundispatcher`` last saw them.

    One row per Ray namespace, rewritten by the supervisor every few seconds; the web process
    reads it instead of asking Ray, so it never connects to Ray at all.
    """

    namespace = models.TextField(primary_key=True)
    # Stamped with the database's clock, which every reader judges freshness by.
    published_at = models.DateTimeField(db_default=Now())
    ping_ms = models.FloatField(null=True)
    # Why the Coordinator is not healthy; NULL when it answered its ping.
    error = models.TextField(null=True)
    # The organism summary (organs, agents, load), as get_organism_summary returns it.
    summary = models.JSONField(null=True)

    class Meta:
        db_table = "coordinator_status"
        # The organism admin's permission (tasks.permissions): initialize, shut down, control
        # task types and the organism endpoints. It lives here, with the organism's one model.
        permissions = [
            ("control_organism", "Can control the organism (initialize, shut down, run on organs)")
        ]

    def __str__(self) -> str:
        return f"{self.namespace}: {'healthy' if self.error is None else self.error}"
