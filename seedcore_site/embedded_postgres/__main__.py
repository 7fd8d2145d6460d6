"""``python -m seedcore_site.embedded_postgres start|stop|status [--data-dir DIR]``.

With no ``--data-dir``, the server of ``python dev.py`` (``$SEEDCORE_VAR_DIR/postgres``, by default
``var/postgres``). ``start`` prints the server's URL; ``--throwaway`` runs it without fsync (for a
test run's server, whose data nobody keeps).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from seedcore_site.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError

CHECKOUT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m seedcore_site.embedded_postgres")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--data-dir", type=Path, help="the data directory (default var/postgres)")
    parser.add_argument("--throwaway", action="store_true", help="no fsync: for test data")
    args = parser.parse_args(argv)
    var_dir = Path(os.environ.get("SEEDCORE_VAR_DIR") or CHECKOUT / "var")
    server = EmbeddedPostgres(args.data_dir or var_dir / "postgres", durable=not args.throwaway)
    try:
        if args.action == "start":
            server.ensure_running()
            print(server.url())
        elif args.action == "stop":
            stopped = server.stop()
            print(f"stopped the server in {server.data_dir}" if stopped else "not running")
        else:
            running = server.is_running()
            print(f"running: {server.url()}" if running else f"not running ({server.data_dir})")
            return 0 if running else 3
    except EmbeddedPostgresError as exc:
        print(f"embedded PostgreSQL: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
