"""When the server's certificate is valid. A certificate past its end (or before its start)
makes every TLS client fail its handshake, and gRPC's note of each failure is not logged (see
``arrowport serve``): so the server says so when it starts, and its metrics carry the end, for
an alert before the day comes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# A certificate ending sooner than this is worth a warning at start-up.
EXPIRY_WARNING = timedelta(days=14)


def validity(cert_file: str) -> tuple[datetime, datetime] | None:
    """The start and end (UTC) of the first certificate in ``cert_file`` (the server's own,
    before its chain); None if it cannot be read so (TLS itself loaded it first, and said so
    if it could not)."""
    from cryptography import x509  # here: 15 MB of memory, for servers that serve TLS only

    try:
        with open(cert_file, "rb") as pem:
            first = x509.load_pem_x509_certificates(pem.read())[0]
    except (OSError, ValueError):
        return None
    return first.not_valid_before_utc, first.not_valid_after_utc


def validity_warning(cert_file: str, now: datetime | None = None) -> str | None:
    """One line saying why clients will refuse the certificate, or that they soon will."""
    period = validity(cert_file)
    if period is None:
        return None
    start, end = period
    now = now or datetime.now(UTC)
    if end <= now:
        return f"tls.cert_file expired at {end:%Y-%m-%d %H:%M} UTC: TLS clients will refuse it"
    if start > now:
        return (
            f"tls.cert_file is not valid before {start:%Y-%m-%d %H:%M} UTC: TLS clients will "
            "refuse it until then"
        )
    left = end - now
    if left < EXPIRY_WARNING:
        when = f"{left.days} days" if left.days else f"{left.seconds // 3600} hours"
        return f"tls.cert_file expires at {end:%Y-%m-%d %H:%M} UTC, in {when}"
    return None
