"""Django's PostgreSQL backend, starting the embedded server before anything connects.

``settings.DATABASES`` names this engine when ``DATABASE_URL`` is unset (see
``seedcore_site.database``). The server starts when a process first asks for connection
parameters (Django's own connections, and the LISTEN connections that borrow them), not when
settings load, so commands that never touch the database start nothing.
"""

from pathlib import Path

from django.db.backends.postgresql import base

from seedcore_site.embedded_postgres import EmbeddedPostgres


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self):
        EmbeddedPostgres(Path(self.settings_dict["DATA_DIR"])).ensure_running()
        return super().get_connection_params()
