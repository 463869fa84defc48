"""What the commands that talk to a server share: where it is, the token, TLS, retries, and
failures as one line on stderr."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arrowport.client import Client

URL_VARIABLE = "ARROWPORT_URL"
TOKEN_VARIABLE = "ARROWPORT_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8000"
# Longer than the server's own limit on a query (300 s by default): a long query ends there.
DEFAULT_TIMEOUT = 330.0


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server")
    group.add_argument(
        "--url",
        default=None,
        help=f"the server's base URL (default: ${URL_VARIABLE}, else {DEFAULT_URL})",
    )
    tokens = group.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token", help=f"API token (visible to other local users; prefer ${TOKEN_VARIABLE})"
    )
    tokens.add_argument("--token-file", type=Path, help="read the API token from this file")
    group.add_argument(
        "--ca-file", type=Path, help="CA certificate(s) that sign the server's TLS certificate"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for each answer (default: "
        f"{DEFAULT_TIMEOUT:.0f}; 0: no limit); a query still running then fails, not retried",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=8,
        metavar="N",
        help="retries of a failed request while the server is unreachable or overloaded, "
        "with growing waits (default: 8, about a minute; 0: none)",
    )


class CommandError(Exception):
    """A failure the command explains in one line (exit code 1)."""


def token_of(args: argparse.Namespace) -> str | None:
    if args.token is not None:
        if not args.token.strip():
            raise CommandError("--token is empty")
        return str(args.token)
    if args.token_file is not None:
        try:
            token = str(args.token_file.read_text(encoding="utf-8").strip())
        except OSError as exc:
            message = f"cannot read --token-file {args.token_file}: {exc.strerror}"
            raise CommandError(message) from None
        except UnicodeDecodeError:
            raise CommandError(f"--token-file {args.token_file} is not UTF-8 text") from None
        if not token:
            raise CommandError(f"--token-file {args.token_file} is empty")
        return token
    return os.environ.get(TOKEN_VARIABLE) or None


def connect(args: argparse.Namespace) -> Client:
    from arrowport.client import Client, RetryPolicy

    if args.retries < 0:
        raise CommandError("--retries must be 0 or more")
    if not 0 <= args.timeout < float("inf"):
        raise CommandError("--timeout must be 0 (no limit) or a number of seconds")
    url = args.url or os.environ.get(URL_VARIABLE) or DEFAULT_URL
    _check_text(url, "--url" if args.url else f"${URL_VARIABLE}")
    token = token_of(args)
    if token is not None:
        _check_text(token, "the token")
    try:
        return Client(
            url,
            token=token,
            verify=args.ca_file if args.ca_file is not None else True,
            retry=RetryPolicy(max_retries=args.retries),
            timeout=args.timeout or None,
        )
    except OSError as exc:  # the CA file is the one file read here
        if args.ca_file is None:
            raise CommandError(str(exc)) from None
        reason = exc.strerror or str(exc)
        raise CommandError(f"cannot use --ca-file {args.ca_file}: {reason}") from None
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _check_text(value: str, what: str) -> None:
    """Refuse text the command line could not decode (bytes that are not UTF-8 reach Python
    as lone surrogates, which no request can carry)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError(f"{what} is not valid UTF-8 text") from None


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse options and arguments that are not valid text (file paths are exempt: a file
    name may be any bytes)."""
    for name, value in vars(args).items():
        if name == "paths":
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str):
                _check_text(item, _ARGUMENT_NAMES.get(name, "--" + name.replace("_", "-")))


_ARGUMENT_NAMES = {"sql": "the SQL", "params": "-p/--param", "command": "the command"}


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def fail(message: object) -> int:
    print(f"arrowport: {one_line(message)}", file=sys.stderr)
    return 1


class _Stderr(logging.Handler):
    """Retry notices from the client, as ``arrowport: ...`` lines on the current stderr (a
    progress display may have replaced it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"arrowport: {one_line(record.getMessage())}", file=sys.stderr)


def show_retries() -> None:
    logger = logging.getLogger("arrowport.client")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
    logger.setLevel(logging.WARNING)
    logger.propagate = False


Run = Callable[[argparse.Namespace], int]


def client_command(run: Run) -> Run:
    """Turn the client's errors (and bad input) into one line on stderr and exit code 1."""

    @functools.wraps(run)
    def guarded(args: argparse.Namespace) -> int:
        from arrowport.client import ArrowportClientError

        show_retries()
        try:
            check_arguments(args)
            return run(args)
        except (ArrowportClientError, CommandError) as exc:
            return fail(exc)
        except KeyboardInterrupt:
            return _interrupted()
        except BrokenPipeError:
            # The reader went away (`| head`): not an error worth a line.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0

    return guarded


def _interrupted() -> int:
    print("arrowport: interrupted", file=sys.stderr)
    return 130
