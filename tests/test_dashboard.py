"""The Grafana dashboard (dashboards/arrowport.json) is well formed, and every metric and label
its PromQL queries is one a real server exports on /metrics."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ipc_bytes, post_binary
from tests.pki import Pki, https_url, tls_config
from tests.server import ArrowportProcess

DASHBOARD_PATH = Path(__file__).resolve().parent.parent / "dashboards" / "arrowport.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Labels Prometheus attaches to every series it scrapes: never in /metrics itself.
TARGET_LABELS = frozenset({"instance", "job"})
# Series-name suffixes of histograms (and summaries) and counters, and what their family is.
SUFFIXES = (
    ("_bucket", frozenset({"histogram"})),
    ("_sum", frozenset({"histogram", "summary"})),
    ("_count", frozenset({"histogram", "summary"})),
    ("_total", frozenset({"counter"})),
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"\barrowport_[a-z0-9_]+")
_SELECTOR = re.compile(r"\b(arrowport_[a-z0-9_]+)\s*(?:\{([^}]*)\})?")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[([^\]]*)\]")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$")


# -- PromQL ------------------------------------------------------------------------------------


@dataclass
class Query:
    """What one PromQL expression asks of the exporter: metric names, each selector's matchers
    as written, and per metric the labels it is filtered (``{label=...}``) or grouped
    (``by (...)``) by."""

    expr: str
    metrics: set[str] = field(default_factory=set)
    selectors: list[tuple[str, str]] = field(default_factory=list)
    labels: dict[str, set[str]] = field(default_factory=dict)
    groupings: list[set[str]] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)

    def need(self, metric: str, labels: set[str]) -> None:
        self.labels.setdefault(metric, set()).update(labels)


def _matching(text: str, start: int, step: int) -> int:
    """Index of the parenthesis that closes (step 1) or opens (step -1) the one at ``start``."""
    depth = 0
    for index in range(start, len(text) if step > 0 else -1, step):
        depth += {"(": step, ")": -step}.get(text[index], 0)
        if depth == 0:
            return index
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def parse(expr: str) -> Query:
    """Read the metric names, label matchers and groupings of a PromQL expression.

    String literals are blanked first (keeping their length, so offsets still point into
    ``expr``): a label value is never taken for a metric name or a matcher. A ``by``/``without``
    clause applies to the aggregation's argument, the parenthesised expression right after the
    clause or right before it (``sum by (a) (x)``, ``sum(x) by (a)``).
    """
    query = Query(expr)
    text = _STRING.sub(lambda string: '"' + " " * (len(string[0]) - 2) + '"', expr)
    for selector in _SELECTOR.finditer(text):
        query.metrics.add(selector[1])
        query.need(selector[1], set(_MATCHER.findall(selector[2] or "")))
        start, end = selector.span(2) if selector[2] is not None else (0, 0)
        query.selectors.append((selector[1], expr[start:end]))
    for grouping in _GROUPING.finditer(text):
        labels = {label.strip() for label in grouping[1].split(",") if label.strip()}
        query.groupings.append(labels)
        after = len(text) - len(text[grouping.end() :].lstrip())
        if text[after : after + 1] == "(":
            argument = text[after : _matching(text, after, 1) + 1]
        else:
            before = len(text[: grouping.start()].rstrip()) - 1
            assert text[before : before + 1] == ")", f"no argument for {grouping[0]!r} in {expr!r}"
            argument = text[_matching(text, before, -1) : before + 1]
        metrics = set(_METRIC.findall(argument))
        assert metrics, f"{grouping[0]!r} groups no arrowport metric in {expr!r}"
        for metric in metrics:
            query.need(metric, labels)
    query.ranges = _RANGE.findall(text)
    return query


def test_the_parser_reads_metrics_matchers_and_groupings() -> None:
    query = parse(
        'histogram_quantile(0.9, sum(rate(arrowport_a_bucket{x="arrowport_fake", y!~"1"}[5m]))'
        " by (le, route)) / on() group_left sum without (z) (arrowport_b_total)"
    )
    assert query.metrics == {"arrowport_a_bucket", "arrowport_b_total"}
    assert query.labels == {
        "arrowport_a_bucket": {"x", "y", "le", "route"},
        "arrowport_b_total": {"z"},
    }
    assert query.groupings == [{"le", "route"}, {"z"}]
    assert query.ranges == ["5m"]
    assert query.selectors == [
        ("arrowport_a_bucket", 'x="arrowport_fake", y!~"1"'),
        ("arrowport_b_total", ""),
    ]


# -- the dashboard -------------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
    return dashboard


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, Query]]:
    return [
        (panel["title"], parse(target["expr"]))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, Query]]:
    """``label_values(selector, label)`` of each query variable, as a query needing ``label``."""
    found = []
    for name, variable in variables(dashboard).items():
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.match(variable["query"])
        assert match is not None, f"variable {name}: not label_values(...): {variable['query']!r}"
        query = parse(match[1])
        assert len(query.metrics) == 1, f"variable {name}: one metric expected"
        query.need(next(iter(query.metrics)), {match[2]})
        found.append((f"variable {name}", query))
    return found


def test_the_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    text = DASHBOARD_PATH.read_text()
    dashboard = load_dashboard()
    assert text == json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n", (
        "keep the file as json.dumps(indent=2) writes it, so that diffs stay small"
    )
    assert dashboard["title"] == "Arrowport"
    assert dashboard["uid"] == "arrowport"
    assert dashboard["id"] is None
    assert dashboard["schemaVersion"] >= 36
    assert not {"version", "iteration"} & dashboard.keys(), "fields Grafana rewrites on every save"
    assert [i["pluginId"] for i in dashboard["__inputs"]] == ["prometheus"]

    panels = dashboard["panels"]
    assert panels
    ids = [panel["id"] for panel in panels]
    assert ids == sorted(set(ids)), "panel ids must be unique and in order"
    for panel in panels:
        where = f"panel {panel['id']} ({panel.get('title')!r})"
        assert panel["type"] in {"timeseries", "stat"}, where
        assert panel["title"].strip(), where
        assert panel["description"].strip(), where
        assert panel["fieldConfig"]["defaults"]["unit"], where
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), where
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, where
        assert panel["datasource"] == DATASOURCE, where
        assert panel["targets"], where
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where
            assert target["expr"].strip(), where
            assert parse(target["expr"]).metrics, f"{where}: no arrowport metric queried"
    assert any(panel["type"] == "stat" for panel in panels)


def test_the_dashboard_has_datasource_instance_and_stream_variables() -> None:
    found = variables(load_dashboard())
    assert found["datasource"]["type"] == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    # Bound to the data source picked in Grafana's import dialog.
    assert found["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"
    for name in ("instance", "stream"):
        variable = found[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["multi"], f"{name}: several values at once"
        assert variable["includeAll"], f"{name}: all values at once"
        assert variable["allValue"] == ".*"
        assert variable["definition"] == variable["query"]
    assert found["instance"]["query"] == "label_values(arrowport_requests_in_flight, instance)"
    assert re.fullmatch(
        r"label_values\(arrowport_ingested_rows_total(\{.*\})?, stream\)", found["stream"]["query"]
    )


def test_every_query_uses_the_rate_interval_and_the_variables() -> None:
    for where, query in panel_queries(load_dashboard()):
        if "rate(" in query.expr:
            assert query.ranges, f"{where}: {query.expr}"
        assert set(query.ranges) <= {"$__rate_interval"}, f"{where}: {query.expr}"
        for metric, matchers in query.selectors:
            assert 'instance=~"$instance"' in matchers, f"{where}: {metric} is not per $instance"
            if metric.startswith("arrowport_ingested_"):
                assert 'stream=~"$stream"' in matchers, f"{where}: {metric} is not per $stream"
        if "histogram_quantile" in query.expr:
            assert all("le" in labels for labels in query.groupings), f"{where}: sum by (le, ...)"


# -- against a real server ---------------------------------------------------------------------


@dataclass
class Exposition:
    """A /metrics answer: each family's type, and the label names seen on each series name."""

    types: dict[str, str]
    labels: dict[str, set[str]]

    @classmethod
    def read(cls, text: str) -> Exposition:
        types: dict[str, str] = {}
        labels: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
        return cls(types, labels)

    def resolve(self, series: str) -> str | None:
        """Why ``series`` is not exported, or None when it is: a gauge by its own name, or a
        histogram's ``_bucket``/``_sum``/``_count`` or a counter's ``_total`` series."""
        if self.types.get(series) in {"gauge", "unknown", "untyped"}:
            return None
        for suffix, types in SUFFIXES:
            if series.endswith(suffix):
                family = series.removesuffix(suffix)
                if self.types.get(family) in types:
                    return None
                return self._missing("/".join(sorted(types)), family)
        return self._missing("gauge", series)

    def _missing(self, wanted: str, family: str) -> str:
        found = self.types.get(family)
        return f"no {wanted} {family} is exported" + (f" (it is a {found})" if found else "")


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposition]:
    """/metrics of a server that took one ingest and refused one request, so that the per-stream,
    per-route and per-error series exist; over TLS, which has a series of its own."""
    pki = Pki(tmp_path_factory.mktemp("dashboard_pki"))
    trusting = ssl.create_default_context(cafile=pki.ca_file)
    with (
        ArrowportProcess(tmp_path_factory.mktemp("dashboard"), config=tls_config(pki)) as server,
        httpx.Client(base_url=https_url(server), timeout=60, verify=trusting) as client,
    ):
        table = pa.table({"k": pa.array([1, 2, 3], pa.int64()), "v": ["a", "b", "c"]})
        accepted = post_binary(client, "dashboard_events", ipc_bytes(table))
        assert accepted.status_code == 200, accepted.text
        refused = post_binary(client, "dashboard_events", b"not an arrow stream")
        assert refused.status_code == 400, refused.text
        response = client.get("/metrics")
        assert response.status_code == 200, response.text
        yield Exposition.read(response.text)


def test_every_metric_and_label_the_dashboard_queries_is_exported(exposition: Exposition) -> None:
    dashboard = load_dashboard()
    queries = panel_queries(dashboard) + variable_queries(dashboard)
    problems = []
    for where, query in queries:
        for metric in sorted(query.metrics):
            missing = exposition.resolve(metric)
            if missing is not None:
                problems.append(f"{where}: {metric}: {missing}")
                continue
            exported = exposition.labels.get(metric, set()) | TARGET_LABELS
            for label in sorted(query.labels.get(metric, set()) - exported):
                problems.append(f"{where}: {metric} has no label {label!r}")
    assert not problems, "\n".join(problems)


def test_flight_calls_are_timed_and_counted_by_method_and_status(tmp_path: Path) -> None:
    import pyarrow.flight as flight

    table = pa.table({"k": pa.array([1, 2, 3], pa.int64())})
    with ArrowportProcess(tmp_path / "flight") as server:
        with flight.connect(server.flight_url) as client:
            writer, reader = client.do_put(flight.FlightDescriptor.for_path("timed"), table.schema)
            writer.write_table(table)
            writer.done_writing()
            reader.read()
            writer.close()
            with pytest.raises(pa.ArrowKeyError):  # pyarrow's class for NOT_FOUND
                client.do_get(flight.Ticket(b'{"table": "no_such_table"}')).read_all()
        text = httpx.get(server.url + "/metrics", timeout=60).text
    counts = {
        (sample.labels["route"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "arrowport_request_duration_seconds_count"
        and sample.labels.get("method") == "GRPC"
    }
    assert counts[("flight/do_put", "OK")] == 1
    assert counts[("flight/do_get", "NOT_FOUND")] == 1
