"""ferry.contract is the one home of the facts processes share: no other module spells a metric name, an MLflow
tag, an alert name, a step name or a trigger; the exporters register exactly the catalogue's metrics; one PSI
and one duration parser.

The literal scan reads every .py file under platform/src, workloads/src, benchmarks and monitoring/ with
`ast` (docstrings are prose and are skipped). Names are found by value, so a name added to the contract is
covered at once. Step names and triggers are ordinary words ("data", "spec"), so they count only where they
are used as one: in a collection of two or more of them, compared with or passed as a `step`/`trigger`, or
given to a function that takes a run or a step. Tests may pin values, but only this file spells them.
"""

from __future__ import annotations

import ast
import math
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ferry.contract import metrics, names
from ferry.contract.durations import parse_duration_s
from ferry.contract.psi import psi

ROOT = Path(__file__).resolve().parents[3]
CONTRACT = ROOT / "platform" / "src" / "ferry" / "contract"
SCANNED = (ROOT / "platform" / "src", ROOT / "workloads" / "src", ROOT / "benchmarks")


@dataclass(frozen=True)
class Vocabulary:
    exact: dict[str, str]  # value -> what it is
    prefixes: dict[str, str]  # a tag prefix: any literal starting with it
    metric_tokens: dict[str, str]  # metric names also found inside PromQL strings
    steps: frozenset[str]
    triggers: frozenset[str]


def vocabulary() -> Vocabulary:
    exact: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for attr in dir(names):
        value = getattr(names, attr)
        if attr.startswith("TAG_") and isinstance(value, str):
            (prefixes if value.endswith(".") else exact)[value] = f"MLflow tag names.{attr}"
    exact.update({alert: "alert name" for alert in (*names.MODEL_ALERTS, *names.PLATFORM_ALERTS)})
    exact[names.PARAM_SPEC_HASH] = "workflow parameter names.PARAM_SPEC_HASH"
    tokens: dict[str, str] = {}
    for metric in metrics.CATALOGUE:
        spellings = {metric.name, metric.series}
        if metric.kind is metrics.Kind.HISTOGRAM:
            spellings |= {metric.series + suffix for suffix in metrics.HISTOGRAM_SERIES}
        if metric.kind is metrics.Kind.COUNTER:  # prometheus_client adds the `_total` itself
            spellings.add(metric.name.removesuffix("_total"))
        for spelling in spellings:
            if "_" in spelling:  # `up` and `ALERTS` are words too; they are read, never exported, by ferry
                tokens[spelling] = f"metric {metric.series}"
    exact.update(tokens)
    return Vocabulary(exact, prefixes, tokens, frozenset(names.STEPS), frozenset(names.TRIGGERS))


VOCABULARY = vocabulary()


def python_files() -> list[Path]:
    files = [path for folder in SCANNED for path in sorted(folder.rglob("*.py"))]
    files += sorted((ROOT / "monitoring").glob("*.py"))
    return [path for path in files if CONTRACT not in path.parents]


# --- the scanner ---------------------------------------------------------------------------------------------

def _identifier(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _identifier(node.func)
    if isinstance(node, ast.Subscript):
        return _identifier(node.value)
    return ""


def _text(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and _text(node.value) is not None}


def _word_findings(node: ast.AST, kind: str, words: frozenset[str]) -> Iterator[tuple[ast.AST, str]]:
    """Where a step name (kind "step") or trigger (kind "trigger") is used as one."""
    def hit(value: ast.AST | None) -> bool:
        return _text(value) in words

    def about(name: str) -> bool:
        lowered = name.lower()
        return kind in lowered or (kind == "step" and "run" in lowered) or (kind == "trigger" and "retrain" in lowered)

    if isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict):
        elements = node.keys if isinstance(node, ast.Dict) else node.elts
        found = [element for element in elements if element is not None and hit(element)]
        if len(found) >= 2:
            yield from ((element, f"{kind} names in a collection") for element in found)
    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        if any(kind in _identifier(side).lower() for side in sides):
            yield from ((side, f"{kind} compared") for side in sides if hit(side))
    if isinstance(node, ast.Call):
        yield from ((kw.value, f"{kind} keyword") for kw in node.keywords
                    if kw.arg and kind in kw.arg and hit(kw.value))
        if about(_identifier(node.func)):
            yield from ((arg, f"{kind} passed to {_identifier(node.func)}") for arg in node.args if hit(arg))
    if isinstance(node, ast.Subscript) and kind in _identifier(node.value).lower() and hit(node.slice):
        yield node.slice, f"{kind} as a key"
    if isinstance(node, ast.arguments):
        positional = [*node.posonlyargs, *node.args]
        pairs = [*zip(positional[len(positional) - len(node.defaults):], node.defaults, strict=True),
                 *zip(node.kwonlyargs, node.kw_defaults, strict=True)]
        yield from ((default, f"{kind} default") for arg, default in pairs if kind in arg.arg and hit(default))
    if kind == "trigger" and isinstance(node, ast.Dict):  # an Argo argument: {"name": "trigger", "value": ...}
        pairs = {_text(k): v for k, v in zip(node.keys, node.values, strict=True) if k is not None}
        if _text(pairs.get("name")) == names.PARAM_TRIGGER:
            yield pairs["name"], "the trigger parameter's name"
            if hit(pairs.get("value")):
                yield pairs["value"], "trigger as an argument"


def _literal_findings(value: str, vocab: Vocabulary) -> Iterator[str]:
    if value in vocab.exact:
        yield vocab.exact[value]
    for prefix, what in vocab.prefixes.items():
        if value.startswith(prefix):
            yield what
    for token, what in vocab.metric_tokens.items():
        if value != token and _contains_name(value, token):
            yield what + " inside a string"
    if value.endswith("_") and len(value) > len("ferry_") and "ferry" in value and any(
            token.startswith(value) for token in vocab.metric_tokens):
        yield "the start of a metric name"


def _contains_name(text: str, name: str) -> bool:
    start = text.find(name)
    while start >= 0:
        before = text[start - 1] if start else " "
        after = text[start + len(name)] if start + len(name) < len(text) else " "
        if not (before.isalnum() or before in "_:") and not (after.isalnum() or after in "_:"):
            return True
        start = text.find(name, start + 1)
    return False


def scan(source: str, where: str, vocab: Vocabulary = VOCABULARY) -> list[str]:
    """Every shared name `source` spells, as 'where:line: literal (what it is)'."""
    tree = ast.parse(source)
    prose = _docstrings(tree)
    found: dict[tuple[int, int, str], str] = {}
    for node in ast.walk(tree):
        value = _text(node)
        if value is not None and id(node) not in prose:
            for what in _literal_findings(value, vocab):
                found[(node.lineno, node.col_offset, what)] = value
        for kind, words in (("step", vocab.steps), ("trigger", vocab.triggers)):
            for at, what in _word_findings(node, kind, words):
                found[(getattr(at, "lineno", 0), getattr(at, "col_offset", 0), what)] = str(_text(at))
    return [f"{where}:{line}: {value!r} ({what})" for (line, _, what), value in sorted(found.items())]


# --- the rule, over the repository -------------------------------------------------------------------------

def test_no_module_outside_the_contract_spells_a_shared_name() -> None:
    files = python_files()
    assert len(files) > 100 and any(path.parts[-2:] == ("benchmarks", "bench_serving.py") for path in files)
    found = [hit for path in files for hit in scan(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == [], "use the constant from ferry.contract (names or metrics):\n" + "\n".join(found)


# The shapes the names had before they moved into the contract: each must be caught again.
REGRESSIONS = {
    'Counter("ferry_rollout_checks_total", "Canary checks by verdict.", ["model"])': "metric",
    'family = CounterMetricFamily("ferry_pipeline_runs", "Finished runs.", labels=["model", "phase"])': "metric",
    'PREFIX = "ray_ferry_serving_"': "start of a metric name",
    'series = f"{PREFIX}requests_total"\nx = f"ray_ferry_serving_requests_total{{{sel}}}"': "inside a string",
    "expr = 'sum(rate(ray_ferry_serving_latency_ms_bucket{le=\"5\"}[5m]))'": "inside a string",
    'tags.get("ferry.evaluate.passed", "false")': "MLflow tag",
    'key = f"ferry.rollout.check.{n:03d}"': "MLflow tag",
    'if alert.labels.get("alertname") == "FerryModelDriftHigh": pass': "alert name",
    'STEP_NAMES = ("data", "tune", "train", "evaluate", "register", "rollout")': "collection",
    'FUNCTIONS = {"data": data.run, "tune": tune.run}': "collection",
    'run = ctx.require_run("train")': "passed to require_run",
    'order = [s for s in steps if step != "tune"]': "compared",
    'start_retraining(settings, model, reason, trigger="drift")': "trigger keyword",
    'def start(model: str, *, trigger: str = "manual") -> None: pass': "trigger default",
    'prefix = retrain_workflow_prefix(model, "drift")': "passed to retrain_workflow_prefix",
    'args = [{"name": "spec-hash", "value": h}, {"name": "trigger", "value": "schedule"}]': "trigger",
    'outputs = STEP_OUTPUTS["evaluate"]': "as a key",
}


@pytest.mark.parametrize(("source", "what"), REGRESSIONS.items())
def test_the_scan_catches_a_name_spelled_again(source: str, what: str) -> None:
    found = scan(source, "x.py")
    assert found and any(what in hit for hit in found), found


@pytest.mark.parametrize("source", [
    '"""Exports ray_ferry_serving_requests_total and tags ferry.evaluate.passed."""',  # prose
    'DATA = {"data": {"spec.json": text}}\npath = ("spec", "training", "tune", "metric")',  # ordinary words
    'res["tune"] = tune_mlp(x)\norder = ("tune", "seq") if odd else ("seq", "tune")\nok = kind == "tune"',
    'from ferry.contract import metrics as m\nseries = f"{m.SERVING_REQUESTS.series}{{model=\\"a\\"}}"',
    'POLICY_SECTIONS = ("rollout", "monitoring", "evaluation", "schedule")\nx = "ferry_"',
])
def test_the_scan_leaves_other_strings_alone(source: str) -> None:
    assert scan(source, "x.py") == []


def test_the_vocabulary_comes_from_the_contract() -> None:
    assert "ferry_serving_requests_total" in VOCABULARY.exact  # as the router registers it
    assert "ray_ferry_serving_requests_total" in VOCABULARY.exact  # as Prometheus sees it
    assert "ray_ferry_serving_latency_ms_bucket" in VOCABULARY.metric_tokens
    assert "model:ferry_serving_errors:ratio_rate" in VOCABULARY.metric_tokens
    assert {"ferry.workflow", "ferry.fault.error_rate", "FerryModelDriftHigh"} <= set(VOCABULARY.exact)
    assert "ferry.rollout.check." in VOCABULARY.prefixes
    assert VOCABULARY.steps == {"data", "tune", "train", "evaluate", "register", "rollout"}
    assert VOCABULARY.triggers == {"spec", "schedule", "drift", "manual"}


# --- the contract itself ---------------------------------------------------------------------------------------

def test_the_contract_imports_nothing_of_ferry_but_itself() -> None:
    for path in CONTRACT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("ferry.") or node.module.startswith("ferry.contract"), path
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("ferry") for a in node.names), path


def test_every_metric_is_named_once_and_knows_its_series() -> None:
    series = [metric.series for metric in metrics.CATALOGUE]
    assert len(series) == len(set(series))
    assert metrics.SERVING_REQUESTS.series == "ray_" + metrics.SERVING_REQUESTS.name
    assert metrics.ROLLOUT_CHECKS.series == metrics.ROLLOUT_CHECKS.name == "ferry_rollout_checks_total"
    assert metrics.SERVING_LATENCY.bucket == "ray_ferry_serving_latency_ms_bucket"
    assert metrics.ERROR_RATIO.at("5m") == "model:ferry_serving_errors:ratio_rate5m"
    with pytest.raises(ValueError, match="not a histogram"):
        _ = metrics.SERVING_REQUESTS.bucket
    with pytest.raises(ValueError, match="not recorded per window"):
        metrics.SERVING_REQUESTS.at("5m")
    for metric in metrics.CATALOGUE:
        assert metric.help and metric.labels is not None and metric.producer, metric.series
        ferry_exported = metric.section.exporter is not metrics.Exporter.EXTERNAL
        assert ferry_exported == metric.name.startswith("ferry_"), metric.series
    assert metrics.SCORE_LE[0] == "0.05" and metrics.SCORE_LE[-1] == "+Inf"
    assert len(metrics.SCORE_LE) == len(metrics.SCORE_BOUNDARIES) + 1


def _exposed(registry: CollectorRegistry) -> dict[str, tuple[str, tuple[str, ...]]]:
    """name Prometheus sees -> (help, label names) of every family a registry exposes."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {key for sample in family.samples for key in sample.labels}
        found[name] = (family.documentation, tuple(sorted(labels)))
    return found


def _catalogued(producer: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {m.series: (m.help, tuple(sorted(m.label_names))) for m in metrics.by_producer(producer)}


def test_the_rollout_step_exports_exactly_its_catalogued_metrics() -> None:
    from ferry.rollout import metrics as rollout_metrics

    exported = rollout_metrics.RolloutMetrics()
    for metric in (exported.checks, exported.decisions):
        metric.labels(*(["x"] * len(metric._labelnames))).inc()
    for gauge in (exported.weights, exported.deltas, exported.p_values, exported.uppers, exported.psis,
                  exported.labelled):
        gauge.labels("m", "1").set(1)
    for gauge in (exported.outcome_deltas, exported.outcome_lowers):
        gauge.labels("m", "1", "average_precision").set(1)
    assert _exposed(exported.registry) == _catalogued(rollout_metrics.__name__)


def test_the_receiver_exports_exactly_its_catalogued_metrics(tmp_path: Path) -> None:
    from ferry.local.alerts import receiver
    from ferry.local.alerts.store import AlertStore
    from ferry.settings import Settings

    settings = Settings(home=tmp_path)
    exported = receiver.ReceiverMetrics(settings, AlertStore(tmp_path / "alerts.db"))
    exported.notifications.labels(metrics.NOTIFICATION_ACCEPTED).inc()
    exported.alerts.labels(names.ALERT_DRIFT_HIGH, "firing").inc()
    exported.triggers.labels("m", metrics.RETRAIN_STARTED).inc()
    exposed = _exposed(exported.registry)
    assert set(exposed) == set(_catalogued(receiver.__name__))
    counters = {name: spec for name, spec in exposed.items() if name != metrics.PIPELINE_RUNS.series}
    assert counters == {k: v for k, v in _catalogued(receiver.__name__).items() if k in counters}


class FakeRayMetrics(types.ModuleType):
    """Stands in for ray.serve.metrics: records what a replica would register."""

    def __init__(self) -> None:
        super().__init__("ray.serve.metrics")
        self.registered: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {}
        for kind in ("Counter", "Gauge", "Histogram"):
            setattr(self, kind, self._factory())

    def _factory(self) -> Any:
        fake = self

        class Metric:
            def __init__(self, name: str, description: str = "", boundaries: Any = (), tag_keys: Any = ()) -> None:
                fake.registered[name] = (description, tuple(tag_keys), tuple(boundaries or ()))

        return Metric


def test_the_router_registers_exactly_its_catalogued_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.serving import drift as serving_drift
    from ferry.serving import metrics as serving_metrics

    fake = FakeRayMetrics()
    serve = types.ModuleType("ray.serve")
    serve.metrics = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray.serve", serve)
    monkeypatch.setitem(sys.modules, "ray.serve.metrics", fake)
    serving_metrics.RayRecorder("m")
    serving_drift.RayDriftGauges("m")
    for producer in (serving_metrics.__name__, serving_drift.__name__):
        for metric in metrics.by_producer(producer):
            boundaries = metric.boundaries if metric.kind is metrics.Kind.HISTOGRAM else ()
            assert fake.registered.pop(metric.name) == (metric.help, metric.label_names, boundaries)
    assert fake.registered == {}


# --- one PSI, one duration parser ------------------------------------------------------------------------------

def test_psi() -> None:
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    assert psi([100, 0, 0], [0, 0, 100]) > 1
    assert psi([], []) == 0.0 and psi([0, 0], [1, 2]) == 0.0
    assert psi([1, 1], [1, 3]) == pytest.approx((0.25 - 0.5) * math.log(0.5) + (0.75 - 0.5) * math.log(1.5))
    with pytest.raises(ValueError, match="different bins"):
        psi([1, 2], [1, 2, 3])


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5),
                                               ("1.5h", 5400), (" 2m ", 120)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "5x", "1h 30m", "m5", "5mm"])
def test_parse_duration_names_a_bad_duration(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration_s(text)


def test_the_callers_share_them() -> None:
    from ferry.local.engine import argo
    from ferry.rollout import policy
    from ferry.serving import drift
    from ferry.spec import models

    assert policy.psi is drift.psi is psi
    assert policy.parse_duration_s is parse_duration_s
    assert models.duration_s("5m") == argo.parse_duration("5m") == parse_duration_s("5m") == 300
