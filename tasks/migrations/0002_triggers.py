"""Database triggers: ``updated_at`` stamped on every update, and status changes announced.

A BEFORE UPDATE row trigger stamps ``updated_at``; two statement-level triggers
with transition tables send one NOTIFY on channel ``seedcore_tasks`` per statement (chunked
under the 8000-byte payload limit) listing ``[id, status, type]`` of each row inserted or
whose status changed. Being triggers, they cover psql and other programs too.
"""

from django.db import migrations

# The payload of one NOTIFY: a JSON array of [id, status, type]; type is cut to 100
# characters so one row can never exceed the payload limit.
_NOTIFY_ROWS = """
    PERFORM pg_notify('seedcore_tasks', '[' || string_agg(item, ',') || ']')
    FROM (
        SELECT item, sum(length(item) + 1) OVER (ORDER BY ord) / 7000 AS chunk
        FROM (
            SELECT json_build_array(n.id, n.status, left(n.type, 100))::text AS item,
                   row_number() OVER () AS ord
            FROM {source}
        ) AS items
    ) AS chunked
    GROUP BY chunk;
    RETURN NULL;
"""

CREATE_TRIGGERS = f"""
CREATE OR REPLACE FUNCTION tasks_stamp_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER tasks_stamp_updated_at BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_stamp_updated_at();

CREATE OR REPLACE FUNCTION tasks_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN {_NOTIFY_ROWS.format(source="new_rows AS n")}
END $$;
CREATE TRIGGER tasks_notify_inserted AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_inserted();

CREATE OR REPLACE FUNCTION tasks_notify_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN {
    _NOTIFY_ROWS.format(
        source="new_rows AS n JOIN old_rows AS o ON o.id = n.id WHERE n.status <> o.status"
    )
}
END $$;
CREATE TRIGGER tasks_notify_status_changed AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_status_changed();
"""

DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS tasks_notify_status_changed ON tasks;
DROP TRIGGER IF EXISTS tasks_notify_inserted ON tasks;
DROP TRIGGER IF EXISTS tasks_stamp_updated_at ON tasks;
DROP FUNCTION IF EXISTS tasks_notify_status_changed();
DROP FUNCTION IF EXISTS tasks_notify_inserted();
DROP FUNCTION IF EXISTS tasks_stamp_updated_at();
"""


def _run(sql):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor != "postgresql":
            raise NotImplementedError(f"SeedCore runs on PostgreSQL only, not {vendor}")
        schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("tasks", "0001_initial")]

    operations = [migrations.RunPython(_run(CREATE_TRIGGERS), _run(DROP_TRIGGERS))]
