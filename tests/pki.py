"""A throwaway certificate authority (``trustme``) and a server certificate it signed, for
tests of the TLS listeners."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import trustme

from tests.server import ArrowportProcess


class Pki:
    def __init__(
        self,
        directory: Path,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> None:
        self.ca = trustme.CA()
        issued = self.ca.issue_cert(
            "127.0.0.1", "localhost", not_before=not_before, not_after=not_after
        )
        self.not_after = not_after
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(self.key_file))


def tls_config(pki: Pki, **auth: Any) -> dict[str, Any]:
    return {
        "tls": {"cert_file": str(pki.cert_file), "key_file": str(pki.key_file)},
        "auth": auth,
    }


def https_url(server: ArrowportProcess) -> str:
    return f"https://127.0.0.1:{server.port}"
