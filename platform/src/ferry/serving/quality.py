"""Model quality from labelled traffic: the workload's metrics of what was served, once labels came back.

Drift says the inputs moved; only labels say whether the model still catches what it should. A background
thread in the router, every `interval_s`, reads the prediction log and the labels of the transactions served in
the last `window_s` seconds (serving time), and for each version and variant that answered at least
`MIN_POSITIVES` labelled positives computes the spec's gate metrics (`evaluation.gates`, e.g. average
precision) with the workload's own function, exported as `ferry_model_quality{model,version,variant,metric}`
(Ray adds `ray_`). A label not back yet is not counted (unlabelled is not "genuine" here: it is unknown).
FerryModelQualityLow fires when the champion's value stays under the gate it had to pass to be registered.

The reads happen off the request path, on this thread; a log that cannot be read leaves the gauges as they
were (evidence does not age into an all-clear) and is logged once per outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from ferry.contract import metrics as m
from ferry.contract.names import LOG_LABELS, LOG_PREDICTIONS
from ferry.serving.prediction_log import arrow_fields, join_key, join_labels, label_schema, read_log, read_served
from ferry.serving.watcher import LOGGER_NAME, BackgroundLoop

logger = logging.getLogger(LOGGER_NAME)
MIN_POSITIVES = 10  # fewer labelled positives than this say more about chance than about the model
Measured = dict[tuple[str, str, str], float]  # (version, variant, metric) -> value


class QualityGauges(Protocol):
    def set(self, version: str, variant: str, metric: str, value: float) -> None: ...


class RayQualityGauges:
    """Created inside a replica (Ray metrics report through the replica's core worker)."""

    def __init__(self, model: str) -> None:
        from ray.serve import metrics

        keys: Any = m.MODEL_QUALITY.label_names  # Ray's stubs type tag_keys as a 1-tuple
        self.model = model
        self._gauge = metrics.Gauge(m.MODEL_QUALITY.name, m.MODEL_QUALITY.help, tag_keys=keys)

    def set(self, version: str, variant: str, metric: str, value: float) -> None:
        self._gauge.set(value, tags={"model": self.model, "version": version, "variant": variant, "metric": metric})


def read_labels(uri: str, model: str, label_model: Any) -> Any:
    """Every label logged for `model` (an empty table of the label schema when none came back yet)."""
    try:
        return read_log(uri, LOG_LABELS, model)
    except FileNotFoundError:
        return label_schema(arrow_fields(label_model)).empty_table()


def measure(uri: str, model: str, workload: Any, metrics: Sequence[str], since_unix: float,
            min_positives: int = MIN_POSITIVES) -> Measured:
    """The metrics of each (version, variant) on the labelled transactions it answered since `since_unix`."""
    key = join_key(workload.raw_request_model, workload.label_model)
    raw = list(workload.raw_request_model.model_fields)
    try:
        served = read_served(uri, LOG_PREDICTIONS, model, [*raw, "version", "variant", "score"], since_unix)
    except FileNotFoundError:
        return {}
    joined = join_labels(served, read_labels(uri, model, workload.label_model), key)
    labelled = joined[joined["arrival_time"].notna()].drop_duplicates(key)
    label_fields = [c for c in workload.label_model.model_fields if c != key]
    found: Measured = {}
    for (version, variant), group in labelled.groupby(["version", "variant"], sort=True):
        if int(group[label_fields].eq(True).any(axis=1).sum()) < min_positives:
            continue
        rows = workload.history_from_log(group[[*raw, *label_fields]])
        scores = group.set_index(key).loc[rows[key], "score"].to_numpy(dtype=np.float64)
        for metric, value in workload.evaluate_rows(rows, scores, metrics).items():
            if value == value:  # NaN: one class only, nothing to say
                found[(str(version), str(variant), metric)] = float(value)
    return found


class QualityMonitor(BackgroundLoop):
    THREAD_PREFIX = "ferry-quality"

    def __init__(self, model: str, uri: str, workload: Any, metrics: Sequence[str], window_s: float,
                 gauges: QualityGauges, interval_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.model, self.uri, self.workload = model, uri, workload
        self.metrics, self.window_s, self.interval_s = tuple(metrics), window_s, interval_s
        self.gauges, self._clock = gauges, clock
        self.failing = False
        super().__init__()

    def publish(self) -> Measured:
        """Measure once and set the gauges; {} (gauges untouched) when the log cannot be read."""
        try:
            found = measure(self.uri, self.model, self.workload, self.metrics, self._clock() - self.window_s)
        except (OSError, ValueError, KeyError) as exc:  # storage down, or a file it cannot parse
            if not self.failing:
                logger.warning("cannot measure %s's quality from its log (%s); keeping the last values",
                               self.model, exc)
            self.failing = True
            return {}
        self.failing = False
        for (version, variant, metric), value in found.items():
            self.gauges.set(version, variant, metric, value)
        return found

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.publish()
