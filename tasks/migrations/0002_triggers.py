"""Database triggers: ``updated_at`` stamped on every update, and status changes announced.

PostgreSQL: a BEFORE UPDATE row trigger stamps ``updated_at``; two statement-level triggers
with transition tables send one NOTIFY on channel ``seedcore_tasks`` per statement (chunked
under the 8000-byte payload limit) listing ``[id, status, type]`` of each row inserted or
whose status changed. Being triggers, they cover psql and other programs too.

SQLite: an AFTER UPDATE trigger stamps ``updated_at`` unless the statement set it itself;
readers notice changes through the ``updated_at`` index (``tasks.queue.changes_since``).
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

POSTGRES_UP = f"""
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

POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS tasks_notify_status_changed ON tasks;
DROP TRIGGER IF EXISTS tasks_notify_inserted ON tasks;
DROP TRIGGER IF EXISTS tasks_stamp_updated_at ON tasks;
DROP FUNCTION IF EXISTS tasks_notify_status_changed();
DROP FUNCTION IF EXISTS tasks_notify_inserted();
DROP FUNCTION IF EXISTS tasks_stamp_updated_at();
"""

SQLITE_UP = """
CREATE TRIGGER tasks_stamp_updated_at AFTER UPDATE ON tasks
FOR EACH ROW WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE tasks SET updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = NEW.id;
END;
"""

SQLITE_DOWN = "DROP TRIGGER IF EXISTS tasks_stamp_updated_at"


def _run(sql_by_vendor):
    def run(apps, schema_editor):
        sql = sql_by_vendor.get(schema_editor.connection.vendor)
        if sql is None:
            raise NotImplementedError(
                f"SeedCore supports PostgreSQL and SQLite, not {schema_editor.connection.vendor}"
            )
        schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("tasks", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRES_UP, "sqlite": SQLITE_UP}),
            _run({"postgresql": POSTGRES_DOWN, "sqlite": SQLITE_DOWN}),
        )
    ]
