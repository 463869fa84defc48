"""Before a request is routed: TLS handshakes count and are timed from the TCP accept, and a
request head has a size bound (``api.max_header_bytes``), each head on a connection its own.

Raw sockets send what no well-behaved client would: nothing at all, or megabytes of headers.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from arrowport.api.connections import LINGER_BYTES
from tests.conftest import closed_by_server
from tests.pki import Pki
from tests.server import ArrowportProcess
from tests.test_overload import RawResponse, read_response, rss_kib

MIB = 1024**2


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def send_head_and_read(sock: socket.socket, head: Iterator[bytes]) -> RawResponse:
    """Send ``head`` in a thread while reading the answer: the server may answer (and close)
    before all of it is sent."""

    def send() -> None:
        try:
            for piece in head:
                sock.sendall(piece)
        except OSError:
            pass  # closed by the server after its answer

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        return read_response(sock, timeout=60)
    finally:
        sender.join(60)


def read_statuses(sock: socket.socket, count: int) -> list[int]:
    """The statuses of ``count`` pipelined answers (each with a Content-Length)."""
    sock.settimeout(60)
    data, statuses = b"", []
    while len(statuses) < count:
        head, found, rest = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line[15:])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        if found and len(rest) >= length:
            statuses.append(int(head.split()[1]))
            data = rest[length:]
            continue
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(statuses)} answers")
        data += chunk
    assert not data, "more answers than requests"
    return statuses


def request_line(target: str = "/health") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()


def many_header_lines(total: int) -> Iterator[bytes]:
    yield request_line()
    block = b"X-A: b\r\n" * 8192  # 64 KiB
    for _ in range(total // len(block)):
        yield block
    yield b"\r\n"


def one_long_header(total: int) -> Iterator[bytes]:
    yield request_line() + b"X-Long: "
    for _ in range(total // MIB):
        yield b"v" * MIB
    yield b"\r\n\r\n"


def one_long_url(total: int) -> Iterator[bytes]:
    yield b"GET /health?q="
    for _ in range(total // MIB):
        yield b"u" * MIB
    yield b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def head_of(size: int, target: str = "/health") -> bytes:
    """A request head of exactly ``size`` bytes (request line, headers, the empty line)."""
    start = request_line(target) + b"X-Pad: "
    padding = size - len(start) - len(b"\r\n\r\n")
    assert padding > 0
    return start + b"p" * padding + b"\r\n\r\n"


# -- TLS: from the TCP accept --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    config = {
        "api": {"header_timeout_seconds": 2, "max_connections": 20},
        "tls": {"cert_file": str(pki.cert_file), "key_file": str(pki.key_file)},
    }
    with ArrowportProcess(tmp_path_factory.mktemp("tls_limits"), config=config) as server:
        yield server


def tls_client(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki.ca_file)


def test_silent_connections_to_a_tls_server_count_and_are_closed_by_the_head_deadline(
    pki: Pki, tls_server: ArrowportProcess
) -> None:
    silent = []
    for _ in range(100):  # five times api.max_connections, none starting a handshake
        silent.append(connect(tls_server.port))
    last_opened = time.monotonic()
    with httpx.Client(verify=tls_client(pki), timeout=30) as client:
        # The connections that have waited longest make room for one that answers.
        assert client.get(f"https://127.0.0.1:{tls_server.port}/health").status_code == 200
    assert closed_by_server(silent[0], 5)  # closed to make room, long before any deadline
    assert closed_by_server(silent[-1], 20)
    # Closed by api.header_timeout_seconds (2 s), not asyncio's 60 s handshake timeout.
    assert time.monotonic() - last_opened < 20
    for sock in silent:
        sock.close()
    with httpx.Client(verify=tls_client(pki), timeout=30) as client:
        assert client.get(f"https://127.0.0.1:{tls_server.port}/health").status_code == 200


def test_a_half_done_handshake_is_closed_by_the_head_deadline(
    tls_server: ArrowportProcess,
) -> None:
    with connect(tls_server.port) as sock:
        started = time.monotonic()
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
        assert closed_by_server(sock, 20)
        assert time.monotonic() - started < 20


def send_all_then_read(sock: socket.socket, head: Iterator[bytes]) -> RawResponse:
    """Send the whole of ``head`` before reading anything, as a simple client does."""
    for piece in head:
        sock.sendall(piece)
    return read_response(sock)


def test_an_oversized_head_over_tls_is_431(pki: Pki, tls_server: ArrowportProcess) -> None:
    """The client is still sending long after the server has answered: the server reads and
    drops the rest, so the answer is not lost to a reset."""
    raw = connect(tls_server.port)
    with tls_client(pki).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        answer = send_all_then_read(sock, many_header_lines(16 * MIB))
        assert answer.status == 431
        assert answer.json()["code"] == "header_too_large"
        assert closed_by_server(sock, 20)
    with httpx.Client(verify=tls_client(pki), timeout=30) as client:
        assert client.get(f"https://127.0.0.1:{tls_server.port}/health").status_code == 200


# -- the size of a request head ------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("head_size")) as server:
        yield server


@pytest.mark.parametrize("shape", [many_header_lines, one_long_header, one_long_url])
def test_an_oversized_head_is_431_without_holding_it(
    plain_server: ArrowportProcess, shape: Callable[[int], Iterator[bytes]]
) -> None:
    assert plain_server.proc is not None
    before = rss_kib(plain_server.proc.pid)
    with connect(plain_server.port) as sock:
        answer = send_head_and_read(sock, shape(50 * MIB))
        assert answer.status == 431
        assert answer.json() == {
            "status": "error",
            "message": "the request head is larger than api.max_header_bytes (65536)",
            "code": "header_too_large",
            "max_header_bytes": 65536,
        }
        assert answer.headers["content-type"] == "application/json"
        assert closed_by_server(sock, 10)
    assert rss_kib(plain_server.proc.pid) - before < 100 * 1024
    assert httpx.get(plain_server.url + "/health", timeout=30).status_code == 200


def test_a_client_that_sends_its_whole_oversized_head_before_reading_gets_the_431(
    plain_server: ArrowportProcess,
) -> None:
    """Closed at once, with megabytes of the head unread, the connection would be reset, and
    the client would lose the answer (its send fails, or its read does)."""
    with connect(plain_server.port) as sock:
        answer = send_all_then_read(sock, many_header_lines(16 * MIB))
        assert answer.status == 431
        assert answer.json()["code"] == "header_too_large"
        assert closed_by_server(sock, 10)


def test_a_client_sending_past_the_lingering_bound_is_closed(
    plain_server: ArrowportProcess,
) -> None:
    """What the server reads after its answer is bounded: past LINGER_BYTES, it closes."""
    total = LINGER_BYTES + 16 * MIB
    sent = 0
    with connect(plain_server.port) as sock:
        try:
            for piece in many_header_lines(total):
                sock.sendall(piece)
                sent += len(piece)
        except OSError:
            pass
    assert 16 * MIB < sent < total
    assert httpx.get(plain_server.url + "/health", timeout=30).status_code == 200


LIMIT = 8192


@pytest.fixture(scope="module")
def small_heads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    config = {"api": {"max_header_bytes": LIMIT}}
    with ArrowportProcess(tmp_path_factory.mktemp("small_heads"), config=config) as server:
        yield server


def test_a_head_of_exactly_the_limit_is_served_and_one_byte_more_is_431(
    small_heads: ArrowportProcess,
) -> None:
    with connect(small_heads.port) as sock:
        sock.sendall(head_of(LIMIT))
        assert read_response(sock).status == 200
    with connect(small_heads.port) as sock:
        sock.sendall(head_of(LIMIT + 1))
        assert read_response(sock).status == 431


def test_each_request_on_a_connection_has_its_own_budget_and_bodies_do_not_count(
    small_heads: ArrowportProcess,
) -> None:
    under = head_of(LIMIT - 100)
    with connect(small_heads.port) as sock:
        # Pipelined: every head just under the limit, all in one send.
        sock.sendall(under * 3)
        assert read_statuses(sock, 3) == [200, 200, 200]
        # A body many times the limit, in the same send as its head.
        body = b'{"sql": "SELECT 42 AS answer -- ' + b"x" * (20 * LIMIT) + b'"}'
        post = (
            b"POST /query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        sock.sendall(post + body)
        assert read_response(sock).status == 200
        # Then one head too large on the same connection.
        sock.sendall(head_of(LIMIT + 1))
        assert read_response(sock).status == 431
        assert closed_by_server(sock, 10)
