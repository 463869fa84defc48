"""``arrowport serve``: run the HTTP (and Flight) server."""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys

from arrowport.cli._types import Commands


def register(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="run the HTTP (and Flight) server")
    serve.add_argument("--config", help="YAML config file (also ARROWPORT_CONFIG)")
    serve.add_argument("--host", help="bind address (api.host)")
    serve.add_argument("--port", type=int, help="HTTP port (api.port; 0 picks a free one)")
    serve.add_argument(
        "--flight-port", type=int, help="Arrow Flight port (flight.port; 0 picks a free one)"
    )
    serve.add_argument("--db", help="DuckDB database file (duckdb.path)")
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the ports (api.workers; a DuckLake target only)",
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        default=None,
        help="serve a non-loopback address with no tokens configured "
        "(auth.allow_unauthenticated): anyone who can connect may read and write everything",
    )
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from arrowport.config import ConfigError, load_settings

    # A native crash (in DuckDB or one of its extensions) leaves every thread's Python stack on
    # stderr, where the logs go: what each thread was doing is most of what there is to know.
    faulthandler.enable()

    overrides = {
        "api.host": args.host,
        "api.port": args.port,
        "duckdb.path": args.db,
        "auth.allow_unauthenticated": args.allow_unauthenticated,
        "flight.port": args.flight_port,
        "api.workers": args.workers,
    }
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as exc:
        print(f"arrowport: {exc}", file=sys.stderr)
        return 2
    # gRPC's C core writes lines of its own to stderr, where the JSON logs go: an INFO line for
    # every failed TLS handshake (anyone can cause those). Only its errors, unless asked.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from arrowport.server import serve  # imported late: keeps the other commands fast

    return serve(settings)
