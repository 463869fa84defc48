"""``arrowport lake maintain``: one maintenance run on the configured DuckLake.

The same run the nodes make with ``ducklake.maintenance_interval_seconds`` (see
:mod:`arrowport.storage.maintenance`), for a cron job or by hand: it waits for no node, and
exits 3 when another node holds the maintenance turn.
"""

from __future__ import annotations

import argparse
import json
import sys

from arrowport.cli._types import Commands

BUSY = 3


def register(commands: Commands) -> None:
    lake = commands.add_parser("lake", help="work on the configured DuckLake")
    actions = lake.add_subparsers(dest="action", required=True)
    maintain = actions.add_parser(
        "maintain",
        help="flush inlined rows, merge small files, expire old snapshots, delete unneeded files",
    )
    maintain.add_argument("--config", help="YAML config file (also ARROWPORT_CONFIG)")
    maintain.set_defaults(run=run_maintain)


def run_maintain(args: argparse.Namespace) -> int:
    from arrowport.config import ConfigError, load_settings
    from arrowport.errors import StorageError
    from arrowport.storage.lake import Lake
    from arrowport.storage.maintenance import maintain, maintenance_turn
    from arrowport.storage.open import open_storage

    try:
        settings = load_settings(args.config, {})
    except ConfigError as exc:
        print(f"arrowport: {exc}", file=sys.stderr)
        return 2
    if settings.storage.target != "ducklake":
        print("arrowport: lake maintain needs storage.target: ducklake", file=sys.stderr)
        return 2
    try:
        storage = open_storage(settings, scheduled=False)
    except StorageError as exc:
        print(f"arrowport: {exc.message}", file=sys.stderr)
        return 1
    if not isinstance(storage, Lake):
        storage.close()
        print("arrowport: lake maintain needs storage.target: ducklake", file=sys.stderr)
        return 2
    try:
        with maintenance_turn(storage) as mine:
            if not mine:
                print("arrowport: another node is maintaining the lake now", file=sys.stderr)
                return BUSY
            report = maintain(storage)
    except Exception as exc:  # a failed step: say which, and exit non-zero for cron
        print(f"arrowport: lake maintenance failed: {storage.scrub(str(exc))}", file=sys.stderr)
        return 1
    finally:
        storage.close()
    print(json.dumps(report.to_json()))
    return 0
