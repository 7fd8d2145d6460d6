from django.db import migrations

# The groups of tasks.permissions.SCOPE_GROUPS, each with its scope's permission and every
# narrower one's. Written out here, not imported, so this migration means the same forever;
# tests/integration/test_permissions.py checks it against tasks.permissions.
VIEW = ("tasks", "task", "view_task", "Can view task")
OPERATE = ("tasks", "task", "operate_task", "Can operate tasks (submit, run now, cancel)")
CONTROL = (
    "organism",
    "coordinatorstatus",
    "control_organism",
    "Can control the organism (initialize, shut down, run on organs)",
)
GROUPS = {
    "viewer": [VIEW],
    "operator": [VIEW, OPERATE],
    "organism admin": [VIEW, OPERATE, CONTROL],
}


def create_groups(apps, schema_editor) -> None:
    """Make the groups with their permissions. Django makes content types and permissions only
    after ``migrate`` finishes (post_migrate), so the rows these need are made here; Django
    finds and keeps them later."""
    db = schema_editor.connection.alias
    content_type_model = apps.get_model("contenttypes", "ContentType")
    permission_model = apps.get_model("auth", "Permission")
    group_model = apps.get_model("auth", "Group")
    for group_name, grants in GROUPS.items():
        group, _ = group_model.objects.using(db).get_or_create(name=group_name)
        for app_label, model, codename, name in grants:
            content_type, _ = content_type_model.objects.using(db).get_or_create(
                app_label=app_label, model=model
            )
            permission, _ = permission_model.objects.using(db).get_or_create(
                content_type=content_type, codename=codename, defaults={"name": name}
            )
            group.permissions.add(permission)


def delete_groups(apps, schema_editor) -> None:
    group_model = apps.get_model("auth", "Group")
    group_model.objects.using(schema_editor.connection.alias).filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    """The permission model (issue #15): the operator's permission and the three groups."""

    dependencies = [
        ("tasks", "0009_unique_tasks"),
        ("organism", "0002_control_permission"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="task",
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [("operate_task", "Can operate tasks (submit, run now, cancel)")],
            },
        ),
        migrations.RunPython(create_groups, delete_groups),
    ]
