from django.db import migrations


class Migration(migrations.Migration):
    """The organism admin's permission, ``organism.control_organism`` (tasks.permissions)."""

    dependencies = [
        ("organism", "0001_coordinator_status"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="coordinatorstatus",
            options={
                "permissions": [
                    (
                        "control_organism",
                        "Can control the organism (initialize, shut down, run on organs)",
                    )
                ]
            },
        ),
    ]
