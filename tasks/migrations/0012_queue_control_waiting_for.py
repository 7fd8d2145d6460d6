from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0011_queue_controls"),
    ]

    operations = [
        migrations.AddField(
            model_name="queuecontrol",
            name="waiting_for",
            field=models.TextField(blank=True, null=True),
        ),
    ]
