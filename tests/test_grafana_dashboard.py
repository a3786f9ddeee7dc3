"""The Grafana dashboard deploy/grafana/mailroom.json is built on what the services define: every
metric an expression names is a Counter, Gauge or Histogram of libs/kit or a service (read from
their definitions, no stack needed), every label it matches on or groups by is one of that metric's
labels, and every event subject it filters on is one the contracts define. (tests/test_metrics.py
checks the same names against the live /metrics of the running stack.)"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from mailroom_contracts import subjects

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "mailroom.json"
SOURCES = [REPO / "libs" / "kit" / "src", *sorted((REPO / "services").glob("*/src"))]
KINDS = {"Counter", "Gauge", "Histogram"}

SELECTOR = re.compile(r"\b(mailroom_[a-z0-9_]+)\b(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def defined_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """Every prometheus_client metric the sources define: name → (kind, label names)."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for src in SOURCES:
        for path in src.rglob("*.py"):
            text = path.read_text()
            if "prometheus_client" not in text:
                continue
            for node in ast.walk(ast.parse(text, str(path))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in KINDS):
                    continue
                if not (node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                    continue  # collections.Counter(...) and the like
                labels_node = node.args[2] if len(node.args) > 2 else None
                for keyword in node.keywords:
                    if keyword.arg == "labelnames":
                        labels_node = keyword.value
                labels = ast.literal_eval(labels_node) if labels_node is not None else ()
                name = node.args[0].value
                assert name not in out, f"{name} is defined twice ({path})"
                out[name] = (node.func.id, frozenset(labels))
    return out


def exposed_series() -> dict[str, frozenset[str]]:
    """Series name → label names, as prometheus_client exposes each definition."""
    series: dict[str, frozenset[str]] = {}
    for name, (kind, labels) in defined_metrics().items():
        if kind == "Counter":
            base = name.removesuffix("_total")
            series[f"{base}_total"] = labels
        elif kind == "Gauge":
            series[name] = labels
        else:
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_count"] = series[f"{name}_sum"] = labels
    return series


def expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_definitions_are_found() -> None:
    metrics = defined_metrics()
    assert metrics["mailroom_http_request_seconds"] == ("Histogram", frozenset({"service", "route", "status"}))
    assert metrics["mailroom_webhook_attempt_seconds"] == ("Histogram", frozenset())
    assert metrics["mailroom_sender_governor_held_total"][1] == {"stream", "reason"}
    assert len(metrics) >= 20


@pytest.mark.parametrize(("title", "expr"), expressions())
def test_every_expression_names_real_metrics_and_labels(title: str, expr: str) -> None:
    series = exposed_series()
    used = SELECTOR.findall(expr)
    assert used, f"{title}: no Mailroom metric in {expr}"
    for name, matchers in used:
        assert name in series, f"{title}: {name} is not a series any service exposes"
        for label, value in MATCHER.findall(matchers):
            assert label in series[name], f"{title}: {name} has no label {label!r} ({sorted(series[name])})"
            if label == "subject":  # each alternative of mailroom.email.(queued|sent|…) is a real subject
                known = {s for s in vars(subjects).values() if isinstance(s, str)}
                alternatives = re.search(r"\(([^)]*)\)", value)
                wanted = (
                    [value.replace(alternatives.group(0), a) for a in alternatives.group(1).split("|")]
                    if alternatives
                    else [value]
                )
                for subject in wanted:
                    assert any(re.fullmatch(subject, s) for s in known), f"{title}: {subject} is no event subject"
    for group in GROUPING.findall(expr):
        for label in (g.strip() for g in group.split(",") if g.strip()):
            for name, _ in used:
                assert label in series[name], f"{title}: groups by {label!r}, which {name} does not have"
