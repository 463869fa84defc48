"""The figures the product must reach, and the plain-text tables the run prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.monitor import percentile

LABELS = {
    "inprocess": "in-process DuckDB INSERT (limit)",
    "http-json": "HTTP seed JSON/base64",
    "http-binary": "HTTP binary IPC",
    "http-zstd": "HTTP binary IPC + zstd",
    "flight": "Flight do_put",
    "flight-bare": "bare pyarrow.flight -> DuckDB (ceiling)",
    "adbc-ingest": "Flight SQL adbc_ingest (ADBC driver)",
}
RSS_LIMIT_MB = 600.0


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: bool = True) -> str:
    """Columns padded to width; every column but the first right-aligned when ``numeric``."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    right = [numeric and i > 0 for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).rjust(w) if r else str(c).ljust(w)
            for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def _rows(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1_000}k" if n >= 1_000 else str(n)


def _status(case: dict[str, Any] | None) -> str | None:
    """A case's one-line reason when it has no numbers, else None."""
    if case is None:
        return "not run"
    if "unavailable" in case:
        return str(case["unavailable"])
    if "error" in case:
        return "error: " + str(case["error"])[:60]
    return None


def throughput_table(results: dict[str, Any]) -> str:
    headers = [
        "case",
        "rows",
        "median s",
        "rows/s",
        "in-process rows/s",
        "x in-process",
        "p50 ms",
        "landed",
    ]
    rows = []
    for key, label in LABELS.items():
        case = results.get(key)
        if case is None:
            continue
        reason = _status(case)
        if reason is not None:
            rows.append([label, "-", "-", reason, "-", "-", "-", "-"])
            continue
        for size, r in case["sizes"].items():
            check = r.get("check")
            landed = "-" if check is None else ("yes" if check["verified"] else "NO")
            rows.append(
                [
                    label,
                    _rows(int(size)),
                    _num(r["median_s"], 4),
                    _num(r["rows_per_s"]),
                    _num(r.get("limit_rows_per_s", r["rows_per_s"])),
                    _num(r.get("ratio"), 2) if "ratio" in r else "1.00",
                    _num(r["latency"]["p50_ms"], 2),
                    landed,
                ]
            )
    if "inprocess" in results and _status(results["inprocess"]) is None:
        seq = results["inprocess"]["sequential"]
        rows.append(
            [
                f"in-process {seq['batch_rows']:,}-row insert+commit, sequential",
                f"{seq['inserts']}x{_rows(seq['batch_rows'])}",
                "-",
                _num(seq["rows_per_s"]),
                _num(seq["rows_per_s"]),
                "1.00",
                _num(seq["latency"]["p50_ms"], 2),
                "-",
            ]
        )
    return _table(headers, rows)


def concurrent_table(results: dict[str, Any]) -> str:
    headers = [
        "case",
        "rows",
        "rows/s",
        "x seq in-process",
        "p50 ms",
        "p99 ms",
        "max ms",
        "/health p50/p99 ms",
        "503 retries",
        "landed",
    ]
    rows = []
    for key, label in (("concurrent-http", "HTTP binary"), ("concurrent-flight", "Flight do_put")):
        case = results.get(key)
        if case is None:
            continue
        reason = _status(case)
        if reason is not None:
            rows.append([label, "-", reason, "-", "-", "-", "-", "-", "-", "-"])
            continue
        lat, health = case["latency"], case["health_under_load"]
        rows.append(
            [
                f"{label}, {case['clients']} clients x {case['batches_per_client']} x "
                f"{_rows(case['batch_rows'])}",
                _num(case["rows"]),
                _num(case["rows_per_s"]),
                _num(case.get("ratio_to_sequential"), 2),
                _num(lat["p50_ms"], 1),
                _num(lat["p99_ms"], 1),
                _num(lat["max_ms"], 1),
                f"{_num(health['p50_ms'], 1)} / {_num(health['p99_ms'], 1)}",
                str(case.get("retries", 0)),
                "yes" if case["check"]["verified"] else "NO",
            ]
        )
    return _table(headers, rows)


def health_table(results: dict[str, Any]) -> str:
    case = results.get("health")
    if case is None:
        return ""
    reason = _status(case)
    if reason is not None:
        return f"/health during ingest: {reason}"
    headers = ["GET /health", "samples", "p50 ms", "p99 ms", "max ms"]
    rows = []
    for key, label in (
        ("health_idle", "idle server"),
        ("health_during_ingest", f"during {_rows(case['ingest_rows'])}-row HTTP binary ingests"),
    ):
        s = case[key]
        rows.append(
            [
                label,
                str(s["count"]),
                _num(s["p50_ms"], 2),
                _num(s["p99_ms"], 2),
                _num(s["max_ms"], 2),
            ]
        )
    return _table(headers, rows)


def memory_table(results: dict[str, Any]) -> str:
    headers = ["2 GB ingest", "GB", "rows", "seconds", "rows/s", "idle MB", "peak RSS MB", "landed"]
    rows = []
    for key, label in (("rss-http", "HTTP binary (chunked)"), ("rss-flight", "Flight do_put")):
        case = results.get(key)
        if case is None:
            continue
        reason = _status(case)
        if reason is not None:
            rows.append([label, "-", "-", "-", reason, "-", "-", "-"])
            continue
        rows.append(
            [
                label,
                _num(case["stream_bytes"] / 1024**3, 2),
                _num(case["rows"]),
                _num(case["seconds"], 1),
                _num(case["rows_per_s"]),
                _num(case["idle_rss_mb"]),
                _num(case["peak_rss_mb"]),
                "yes" if case["check"]["verified"] else "NO",
            ]
        )
    return _table(headers, rows) if rows else ""


# -- targets -----------------------------------------------------------------------------------


def _largest(case: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    if case is None or _status(case) is not None:
        return None
    size = max(case["sizes"], key=int)
    return size, case["sizes"][size]


def _ceiling_note(bare: dict[str, Any] | None, size: str, note: str) -> str:
    """``note`` plus the bare Flight server's ratio at ``size`` in this run, when it was measured."""
    if bare is None or _status(bare) is not None or "ratio" not in bare["sizes"].get(size, {}):
        return note
    ceiling = f"bare pyarrow.flight -> DuckDB: {bare['sizes'][size]['ratio']:.2f} x"
    return f"{note}; {ceiling}" if note else ceiling


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure from the issue: what was measured, and PASS / FAIL / n/a."""
    out: list[dict[str, Any]] = []

    def add(figure: str, target: str, measured: str, ok: bool | None, note: str = "") -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        out.append(
            {
                "figure": figure,
                "target": target,
                "measured": measured,
                "result": verdict,
                "note": note,
            }
        )

    for key, name, minimum in (
        ("flight", "Flight do_put", 0.85),
        ("http-binary", "HTTP binary IPC", 0.70),
        ("http-json", "HTTP seed JSON/base64", 0.45),
    ):
        largest = _largest(results.get(key))
        target = f">= {minimum:.2f} x in-process rows/s"
        if largest is None or "ratio" not in largest[1]:
            add(f"{name}, 1M rows", target, _status(results.get(key)) or "no baseline", None)
            continue
        size, r = largest
        note = "" if int(size) == 1_000_000 else f"measured at {_rows(int(size))} rows (not 1M)"
        if key == "flight":
            note = _ceiling_note(results.get("flight-bare"), size, note)
        add(f"{name}, 1M rows", target, f"{r['ratio']:.2f} x", r["ratio"] >= minimum, note)

    conc = results.get("concurrent-http")
    seq = results.get("inprocess", {}).get("sequential") if results.get("inprocess") else None
    if conc is None or _status(conc) is not None or seq is None:
        reason = _status(conc) or "no baseline"
        add(
            "16 clients x 1k rows, HTTP binary", ">= 2 x sequential in-process rows/s", reason, None
        )
        add("16 clients x 1k rows, HTTP binary", "p99 <= 100 ms", reason, None)
    else:
        ratio = conc["rows_per_s"] / seq["rows_per_s"]
        add(
            "16 clients x 1k rows, HTTP binary",
            ">= 2 x sequential in-process rows/s",
            f"{ratio:.2f} x ({conc['rows_per_s']:,.0f} vs {seq['rows_per_s']:,.0f} rows/s)",
            ratio >= 2 and conc["check"]["verified"],
        )
        p99 = conc["latency"]["p99_ms"]
        health = conc["health_under_load"]["p99_ms"]
        add(
            "16 clients x 1k rows, HTTP binary",
            "p99 <= 100 ms",
            f"{p99:.1f} ms",
            p99 <= 100,
            f"/health p99 under the same load: {health:.1f} ms",
        )

    binary = results.get("http-binary")
    one_k = binary["sizes"].get("1000") if binary and _status(binary) is None else None
    # The paired in-process inserts (interleaved with the requests) are the fairer yardstick.
    limit_ms = None
    if one_k is not None and one_k.get("limit_times_s"):
        limit_ms = percentile([t * 1000 for t in one_k["limit_times_s"]], 50)
    elif seq is not None:
        limit_ms = seq["latency"]["p50_ms"]
    if one_k is None or limit_ms is None:
        add("single client, 1k rows, HTTP binary", "p50 <= 2 x in-process", "not measured", None)
    else:
        p50, limit = one_k["latency"]["p50_ms"], limit_ms
        add(
            "single client, 1k rows, HTTP binary",
            "p50 <= 2 x in-process insert+commit",
            f"{p50:.2f} ms vs {limit:.2f} ms ({p50 / limit:.2f} x)",
            p50 <= 2 * limit,
        )

    for key, name in (("rss-http", "HTTP"), ("rss-flight", "Flight")):
        case = results.get(key)
        target = f"peak RSS <= {RSS_LIMIT_MB:.0f} MB"
        if case is None or _status(case) is not None:
            add(f"2 GB ingest, {name}", target, _status(case) or "not run", None)
            continue
        add(
            f"2 GB ingest, {name}",
            target,
            f"{case['peak_rss_mb']:.0f} MB",
            case["peak_rss_mb"] <= RSS_LIMIT_MB and case["check"]["verified"],
        )

    health_case = results.get("health")
    if health_case is None or _status(health_case) is not None:
        add("/health during a 1M-row ingest", "p99 <= 50 ms", _status(health_case) or "", None)
    else:
        s = health_case["health_during_ingest"]
        rows = health_case["ingest_rows"]
        note = "" if rows == 1_000_000 else f"during {_rows(rows)}-row ingests (not 1M)"
        add(
            "/health during a 1M-row ingest",
            "p99 <= 50 ms",
            f"{s['p99_ms']:.1f} ms ({s['count']} samples)",
            s["count"] > 0 and s["p99_ms"] <= 50,
            note,
        )
    return out


def targets_table(rows: list[dict[str, Any]]) -> str:
    headers = ["figure", "target", "measured", "result", "note"]
    table = [[r["figure"], r["target"], r["measured"], r["result"], r["note"]] for r in rows]
    return _table(headers, table, numeric=False)
