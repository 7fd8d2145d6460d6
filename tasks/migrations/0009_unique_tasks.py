import django.db.models.deletion
import django.db.models.functions.datetime
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    """Unique tasks: ``tasks.unique_key`` with a partial unique index over unfinished tasks
    (so PostgreSQL itself keeps one per key, for plain INSERTs too), and ``idempotency_keys``
    for the API's Idempotency-Key header. Existing tasks have no key."""

    dependencies = [
        ("tasks", "0008_bulk_actions"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="IdempotencyKey",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.TextField()),
                ("request_hash", models.CharField(max_length=64)),
                ("task_id", models.UUIDField()),
                (
                    "created_at",
                    models.DateTimeField(db_default=django.db.models.functions.datetime.Now()),
                ),
                ("expires_at", models.DateTimeField()),
            ],
            options={
                "db_table": "idempotency_keys",
            },
        ),
        migrations.AddField(
            model_name="task",
            name="unique_key",
            field=models.TextField(
                blank=True,
                help_text=(
                    "While an unfinished task holds this key, no second task is queued with it."
                ),
                null=True,
            ),
        ),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.UniqueConstraint(
                condition=models.Q(
                    ("status__in", ("QUEUED", "RETRY", "RUNNING")), ("unique_key__isnull", False)
                ),
                fields=("unique_key",),
                name="tasks_unique_key_unfinished",
            ),
        ),
        migrations.AddField(
            model_name="idempotencykey",
            name="user",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="idempotency_keys",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddIndex(
            model_name="idempotencykey",
            index=models.Index(fields=["expires_at"], name="idempotency_keys_expiry_idx"),
        ),
        migrations.AddConstraint(
            model_name="idempotencykey",
            constraint=models.UniqueConstraint(
                fields=("user", "key"), name="idempotency_keys_user_key"
            ),
        ),
    ]
