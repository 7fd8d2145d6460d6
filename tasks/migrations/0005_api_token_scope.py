from django.db import migrations, models

SCOPES = [("read", "read"), ("operate", "operate"), ("admin", "admin")]


class Migration(migrations.Migration):
    """Token scopes and expiry. Tokens made before scopes existed could do everything, so they
    get ``admin`` (still capped by their owner's current power); new ones default to ``read``."""

    dependencies = [
        ("tasks", "0004_metrics_stats"),
    ]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="scope",
            field=models.CharField(choices=SCOPES, default="admin", max_length=8),
        ),
        migrations.AlterField(
            model_name="apitoken",
            name="scope",
            field=models.CharField(choices=SCOPES, default="read", max_length=8),
        ),
    ]
