"""The figures the product must reach, and the plain-text tables the run prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.monitor import percentile

LABELS = {
    "inprocess": "in-process DuckDB INSERT (limit)",
    "http-json": "HTTP seed JSON/base64",
    "http-binary": "HTTP binary IPC",
    "http-binary-10k": "HTTP binary IPC, producer 10,000-row batches",
    "http-zstd": "HTTP binary IPC + zstd",
    "flight": "Flight do_put",
    "flight-10k": "Flight do_put, producer 10,000-row batches",
    "flight-bare": "bare pyarrow.flight -> DuckDB (ceiling)",
    "adbc-ingest": "Flight SQL adbc_ingest (ADBC driver)",
    "quack": "Quack INSERT (DuckDB remote protocol)",
}
RSS_LIMIT_MB = 600.0
# A JSON body is parsed in memory: the server may hold it once, plus this much.
JSON_RSS_HEADROOM_MB = 300.0


def cores(meta: dict[str, Any]) -> str:
    """The machine's cores as the run saw them, printed with every table."""
    return f"os.cpu_count() {meta['cpus']}, sched_getaffinity {meta['usable_cpus']}"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: bool = True) -> str:
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


def number(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def rows_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1_000}k" if n >= 1_000 else str(n)


def case_status(case: dict[str, Any] | None) -> str | None:
    """A case's one-line reason when it has no numbers, else None."""
    if case is None:
        return "not run"
    if "unavailable" in case:
        return str(case["unavailable"])
    if "error" in case:
        return "error: " + str(case["error"])[:60]
    return None


def _size_rows(label: str, sizes: dict[str, Any]) -> list[list[str]]:
    """One throughput row per size of a per-size case."""
    rows = []
    for size, r in sizes.items():
        check = r.get("check")
        landed = "-" if check is None else ("yes" if check["verified"] else "NO")
        rows.append(
            [
                label,
                rows_label(int(size)),
                number(r["median_s"], 4),
                number(r["rows_per_s"]),
                number(r.get("limit_rows_per_s", r["rows_per_s"])),
                number(r.get("ratio"), 2) if "ratio" in r else "1.00",
                number(r["latency"]["p50_ms"], 2),
                landed,
            ]
        )
    return rows


def _sequential_row(seq: dict[str, Any]) -> list[str]:
    return [
        f"in-process {seq['batch_rows']:,}-row insert+commit, sequential",
        f"{seq['inserts']}x{rows_label(seq['batch_rows'])}",
        "-",
        number(seq["rows_per_s"]),
        number(seq["rows_per_s"]),
        "1.00",
        number(seq["latency"]["p50_ms"], 2),
        "-",
    ]


def throughput_table(results: dict[str, Any]) -> str:
    """Every per-size case; ``x in-process`` is against the row-group-sized in-process insert."""
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
        reason = case_status(case)
        if reason is not None:
            rows.append([label, "-", "-", reason, "-", "-", "-", "-"])
            continue
        rows += _size_rows(label, case["sizes"])
        for batch_rows, sizes in case.get("producer_batches", {}).items():
            rows += _size_rows(f"in-process, {int(batch_rows):,}-row batches", sizes)
    limit = results.get("inprocess")
    if limit is not None and case_status(limit) is None:
        rows.append(_sequential_row(limit["sequential"]))
    return text_table(headers, rows)


def _cpu_cell(case: dict[str, Any]) -> str:
    cpu = case.get("cpu_per_request")
    return "-" if cpu is None else f"{number(cpu['server_ms'], 2)} / {number(cpu['client_ms'], 2)}"


def _concurrent_row(label: str, case: dict[str, Any]) -> list[str]:
    lat, health = case["latency"], case.get("health_under_load")
    return [
        f"{label}, {case['clients']} clients x {case['batches_per_client']} x "
        f"{rows_label(case['batch_rows'])}",
        number(case["rows"]),
        number(case["rows_per_s"]),
        number(case.get("ratio_to_sequential"), 2),
        number(lat["p50_ms"], 1),
        number(lat["p99_ms"], 1),
        number(lat["max_ms"], 1),
        "-" if health is None else f"{number(health['p50_ms'], 1)} / {number(health['p99_ms'], 1)}",
        _cpu_cell(case),
        str(case.get("retries", "-")),
        "yes" if case["check"]["verified"] else "NO",
    ]


def _concurrent_cases(results: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """(label, figures or a case with a reason) of each many-clients run, Quack's included."""
    found: list[tuple[str, dict[str, Any] | None]] = [
        ("HTTP binary", results.get("concurrent-http")),
        ("Flight do_put", results.get("concurrent-flight")),
    ]
    quack = results.get("quack")
    if quack is not None:
        found.append(("Quack INSERT", quack if case_status(quack) else quack["concurrent"]))
    return [(label, case) for label, case in found if case is not None]


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
        "CPU ms/request server / load",
        "503 retries",
        "landed",
    ]
    rows = []
    for label, case in _concurrent_cases(results):
        assert case is not None
        reason = case_status(case)
        if reason is not None:
            rows.append([label, "-", reason, *["-"] * 8])
            continue
        rows.append(_concurrent_row(label, case))
    return text_table(headers, rows) if rows else ""


def _measured(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    case = results.get(key)
    return case if case is not None and case_status(case) is None else None


def _quack_row(
    label: str, quack: dict[str, Any], peers: list[dict[str, Any] | None], p99: bool
) -> list[str]:
    """Quack's rows/s, then each Arrowport peer's and its ratio to Quack's (dashes when the peer
    was not measured); with ``p99``, the three p99 latencies."""
    cells = [label, number(quack["rows_per_s"])]
    for peer in peers:
        if peer is None:
            cells += ["-", "-"]
        else:
            cells += [
                number(peer["rows_per_s"]),
                f"{peer['rows_per_s'] / quack['rows_per_s']:.2f} x",
            ]
    latencies = (number(f["latency"]["p99_ms"], 1) if f else "-" for f in [quack, *peers])
    return [*cells, " / ".join(latencies) if p99 else "-"]


def quack_table(results: dict[str, Any]) -> str:
    """Quack's figures beside Arrowport's HTTP binary and Flight ones from the same run, as
    Arrowport / Quack."""
    quack = results.get("quack")
    if quack is None:
        return ""
    reason = case_status(quack)
    if reason is not None:
        return reason if reason.startswith("quack") else f"quack: {reason}"
    headers = ["case", "Quack rows/s", "HTTP rows/s", "HTTP / Quack", "Flight rows/s"]
    headers += ["Flight / Quack", "p99 ms Quack / HTTP / Flight"]
    bulk = [_measured(results, "http-binary"), _measured(results, "flight")]
    rows = [
        _quack_row(
            f"{rows_label(int(size))} rows, one client",
            figures,
            [case["sizes"].get(size) if case else None for case in bulk],
            p99=False,
        )
        for size, figures in quack["sizes"].items()
    ]
    conc = quack["concurrent"]
    label = f"{conc['clients']} clients x {conc['batches_per_client']} x {rows_label(conc['batch_rows'])}"
    peers = [_measured(results, "concurrent-http"), _measured(results, "concurrent-flight")]
    rows.append(_quack_row(label, conc, peers, p99=True))
    return text_table(headers, rows)


def health_table(results: dict[str, Any]) -> str:
    case = results.get("health")
    if case is None:
        return ""
    reason = case_status(case)
    if reason is not None:
        return f"/health during ingest: {reason}"
    headers = ["GET /health", "samples", "p50 ms", "p99 ms", "max ms"]
    rows = []
    for key, label in (
        ("health_idle", "idle server"),
        (
            "health_during_ingest",
            f"during {rows_label(case['ingest_rows'])}-row HTTP binary ingests",
        ),
    ):
        s = case[key]
        rows.append(
            [
                label,
                str(s["count"]),
                number(s["p50_ms"], 2),
                number(s["p99_ms"], 2),
                number(s["max_ms"], 2),
            ]
        )
    return text_table(headers, rows)


def memory_table(results: dict[str, Any]) -> str:
    headers = ["large body", "GB", "rows", "seconds", "rows/s", "idle MB", "peak RSS MB", "landed"]
    rows = []
    for key, label in (
        ("rss-http", "HTTP binary (chunked)"),
        ("rss-flight", "Flight do_put"),
        ("rss-json", "HTTP JSON/base64 (chunked)"),
    ):
        case = results.get(key)
        if case is None:
            continue
        reason = case_status(case)
        if reason is not None:
            rows.append([label, "-", "-", "-", reason, "-", "-", "-"])
            continue
        rows.append(
            [
                label,
                number(case.get("body_bytes", case["stream_bytes"]) / 1024**3, 2),
                number(case["rows"]),
                number(case["seconds"], 1),
                number(case["rows_per_s"]),
                number(case["idle_rss_mb"]),
                number(case["peak_rss_mb"]),
                "yes" if case["check"]["verified"] else "NO",
            ]
        )
    return text_table(headers, rows) if rows else ""


# -- targets -----------------------------------------------------------------------------------

# (case, figure, minimum ratio to the row-group-sized in-process insert)
RATIO_TARGETS = (
    ("http-binary", "HTTP binary IPC, 1M rows", 0.75),
    ("flight", "Flight do_put, 1M rows", 0.75),
    ("http-binary-10k", "producer sends 10,000-row batches, HTTP binary, 1M rows", 0.65),
    ("flight-10k", "producer sends 10,000-row batches, Flight do_put, 1M rows", 0.65),
    ("http-json", "HTTP seed JSON/base64, 1M rows", 0.45),
)
CONCURRENT = "16 clients x 1k rows"


class _Verdicts:
    """The rows of the figures table, in the order they are added."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, figure: str, target: str, measured: str, ok: bool | None, note: str = "") -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        self.rows.append(
            {"figure": figure, "target": target, "measured": measured, "result": verdict}
            | {"note": note}
        )


def _at_1m(case: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The 1M-row figures, or the largest size measured when 1M was not."""
    if case is None or case_status(case) is not None or not case["sizes"]:
        return None
    size = "1000000" if "1000000" in case["sizes"] else max(case["sizes"], key=int)
    return size, case["sizes"][size]


def _ceiling_note(bare: dict[str, Any] | None, size: str, note: str) -> str:
    """``note`` plus the bare Flight server's ratio at ``size`` in this run, when it was measured."""
    if bare is None or case_status(bare) is not None or "ratio" not in bare["sizes"].get(size, {}):
        return note
    ceiling = f"bare pyarrow.flight -> DuckDB: {bare['sizes'][size]['ratio']:.2f} x"
    return f"{note}; {ceiling}" if note else ceiling


def _ratio_targets(results: dict[str, Any], out: _Verdicts) -> None:
    for key, figure, minimum in RATIO_TARGETS:
        target = f">= {minimum:.2f} x in-process, row-group batches"
        found = _at_1m(results.get(key))
        if found is None or "ratio" not in found[1]:
            out.add(figure, target, case_status(results.get(key)) or "no baseline", None)
            continue
        size, r = found
        note = (
            "" if int(size) == 1_000_000 else f"measured at {rows_label(int(size))} rows (not 1M)"
        )
        if key == "flight":
            note = _ceiling_note(results.get("flight-bare"), size, note)
        verified = r.get("check", {}).get("verified", True)
        out.add(figure, target, f"{r['ratio']:.2f} x", r["ratio"] >= minimum and verified, note)


def _quack_concurrent(results: dict[str, Any]) -> dict[str, Any] | None:
    quack = results.get("quack")
    return quack["concurrent"] if quack is not None and case_status(quack) is None else None


def _concurrent_targets(results: dict[str, Any], out: _Verdicts) -> None:
    """HTTP against the sequential in-process rate (the earlier figure), both transports
    against Quack under the same load, and both transports' p99."""
    limit = results.get("inprocess")
    seq = limit["sequential"] if limit is not None and case_status(limit) is None else None
    quack = _quack_concurrent(results)
    for key, name in (("concurrent-http", "HTTP binary"), ("concurrent-flight", "Flight do_put")):
        case = results.get(key)
        reason = case_status(case)
        figure = f"{CONCURRENT}, {name}"
        if key == "concurrent-http":
            target = ">= 2 x sequential in-process rows/s"
            _versus_target(out, figure, target, case, seq, "no baseline")
        _versus_target(out, figure, ">= 2 x Quack rows/s", case, quack, "Quack not measured")
        if case is None or reason is not None:
            out.add(figure, "p99 <= 100 ms", reason or "not run", None)
            continue
        p99 = case["latency"]["p99_ms"]
        health = case["health_under_load"]["p99_ms"]
        note = f"/health p99 under the same load: {health:.1f} ms"
        out.add(figure, "p99 <= 100 ms", f"{p99:.1f} ms", p99 <= 100, note)


def _versus_target(
    out: _Verdicts,
    figure: str,
    target: str,
    case: dict[str, Any] | None,
    baseline: dict[str, Any] | None,
    missing: str,
) -> None:
    """``case`` at least twice the ``baseline``'s rows/s, with its rows landed."""
    if case is None or case_status(case) is not None or baseline is None:
        out.add(figure, target, case_status(case) or missing, None)
        return
    ratio = case["rows_per_s"] / baseline["rows_per_s"]
    measured = f"{ratio:.2f} x ({case['rows_per_s']:,.0f} vs {baseline['rows_per_s']:,.0f} rows/s)"
    out.add(figure, target, measured, ratio >= 2 and case["check"]["verified"])


def _latency_target(results: dict[str, Any], out: _Verdicts) -> None:
    binary = results.get("http-binary")
    one_k = binary["sizes"].get("1000") if binary and case_status(binary) is None else None
    limit = results.get("inprocess")
    seq = limit["sequential"] if limit is not None and case_status(limit) is None else None
    # The paired in-process inserts (interleaved with the requests) are the fairer yardstick.
    limit_ms = None
    if one_k is not None and one_k.get("limit_times_s"):
        limit_ms = percentile([t * 1000 for t in one_k["limit_times_s"]], 50)
    elif seq is not None:
        limit_ms = seq["latency"]["p50_ms"]
    figure = "single client, 1k rows, HTTP binary"
    if one_k is None or limit_ms is None:
        out.add(figure, "p50 <= 2 x in-process", "not measured", None)
        return
    p50 = one_k["latency"]["p50_ms"]
    measured = f"{p50:.2f} ms vs {limit_ms:.2f} ms ({p50 / limit_ms:.2f} x)"
    out.add(figure, "p50 <= 2 x in-process insert+commit", measured, p50 <= 2 * limit_ms)


def _memory_targets(results: dict[str, Any], out: _Verdicts) -> None:
    for key, name in (("rss-http", "HTTP"), ("rss-flight", "Flight")):
        case = results.get(key)
        target = f"peak RSS <= {RSS_LIMIT_MB:.0f} MB"
        if case is None or case_status(case) is not None:
            out.add(f"2 GB ingest, {name}", target, case_status(case) or "not run", None)
            continue
        ok = case["peak_rss_mb"] <= RSS_LIMIT_MB and case["check"]["verified"]
        out.add(f"2 GB ingest, {name}", target, f"{case['peak_rss_mb']:.0f} MB", ok)
    case = results.get("rss-json")
    figure = "500 MB JSON request"
    target = f"peak RSS <= body + {JSON_RSS_HEADROOM_MB:.0f} MB"
    if case is None or case_status(case) is not None:
        out.add(figure, target, case_status(case) or "not run", None)
        return
    body_mb = case["body_bytes"] / 1024**2
    limit_mb = body_mb + JSON_RSS_HEADROOM_MB
    measured = f"{case['peak_rss_mb']:.0f} MB (body {body_mb:.0f} MB, limit {limit_mb:.0f} MB)"
    ok = case["peak_rss_mb"] <= limit_mb and case["check"]["verified"]
    out.add(figure, target, measured, ok)


def _health_target(results: dict[str, Any], out: _Verdicts) -> None:
    case = results.get("health")
    figure = "/health during a 1M-row ingest"
    if case is None or case_status(case) is not None:
        out.add(figure, "p99 <= 50 ms", case_status(case) or "", None)
        return
    s = case["health_during_ingest"]
    rows = case["ingest_rows"]
    note = "" if rows == 1_000_000 else f"during {rows_label(rows)}-row ingests (not 1M)"
    measured = f"{s['p99_ms']:.1f} ms ({s['count']} samples)"
    out.add(figure, "p99 <= 50 ms", measured, s["count"] > 0 and s["p99_ms"] <= 50, note)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure from the issues: what was measured, and PASS / FAIL / n/a."""
    out = _Verdicts()
    _ratio_targets(results, out)
    _concurrent_targets(results, out)
    _latency_target(results, out)
    _memory_targets(results, out)
    _health_target(results, out)
    return out.rows


def targets_table(rows: list[dict[str, Any]]) -> str:
    headers = ["figure", "target", "measured", "result", "note"]
    table = [[r["figure"], r["target"], r["measured"], r["result"], r["note"]] for r in rows]
    return text_table(headers, table, numeric=False)
