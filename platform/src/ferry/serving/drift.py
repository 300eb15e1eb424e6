"""Live drift in the router: PSI of live inputs and scores against the champion's training reference.

Every scored batch adds its rows to a sliding window (`monitoring.drift_window`), binned against the cut
points stored with the champion version (`ferry.stats.reference`). A background thread, every
`publish_interval_s`, sums the window and exports the gauges `ferry.contract.metrics.DRIFT_PSI`
(`{model,feature}`, feature="score" for the champion's score) and `LAST_TRAINED` (`{model}`, when the
champion's training finished); Ray's exporter adds `ray_`, as for `ferry.serving.metrics`. The same thread notices a new
champion, downloads its reference and training time from the registry and starts a fresh window: counts
binned against one version's cut points mean nothing against another's.

Cost on the request path: one lock, one `searchsorted` per feature and one `bincount` per batch, no
allocation proportional to the window. The window is a ring of `SLOTS` time slots, each a vector of bin
counts; a slot older than the window is zeroed when its turn comes again, so the window slides in steps of
window/SLOTS. PSI needs enough rows to mean something (with ~10 bins its expected value on a sample of n
undrifted rows is ~9/n), so it is published only with at least `MIN_ROWS` rows in the window; below that
the gauge keeps its last value (evidence does not age into an all-clear because traffic paused).

Every row counts towards the feature PSI, whichever variant answered it (the inputs are the same traffic);
only the champion's scores count towards the score PSI, as the reference is the champion's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from ferry.adapters.registry_port import VersionFacts
from ferry.contract import metrics as m
from ferry.contract.psi import psi
from ferry.serving.watcher import LOGGER_NAME, BackgroundLoop
from ferry.stats.reference import SCORE, Reference, bin_index

logger = logging.getLogger(LOGGER_NAME)

SLOTS = 12
MIN_ROWS = 200
MIN_PUBLISH_S, MAX_PUBLISH_S = 1.0, 15.0

Clock = Callable[[], float]


class DriftGauges(Protocol):
    def psi(self, feature: str, value: float) -> None: ...

    def trained_at(self, seconds: float) -> None: ...


class RayDriftGauges:
    """Created inside a replica (Ray metrics report through the replica's core worker)."""

    def __init__(self, model: str) -> None:
        from ray.serve import metrics

        def gauge(metric: m.Metric) -> Any:
            keys: Any = metric.label_names  # Ray's stubs type tag_keys as a 1-tuple
            return metrics.Gauge(metric.name, metric.help, tag_keys=keys)

        self.model = model
        self._psi, self._trained = gauge(m.DRIFT_PSI), gauge(m.LAST_TRAINED)

    def psi(self, feature: str, value: float) -> None:
        self._psi.set(value, tags={"model": self.model, "feature": feature})

    def trained_at(self, seconds: float) -> None:
        self._trained.set(seconds, tags={"model": self.model})


class DriftWindow:
    """Bin counts of the live rows of the last `window_s` seconds, against one reference."""

    def __init__(self, reference: Reference, feature_names: Sequence[str], window_s: float,
                 clock: Clock = time.monotonic, slots: int = SLOTS) -> None:
        known = [(i, name) for i, name in enumerate(feature_names) if name in reference.features]
        self.columns = [i for i, _ in known]
        self.names = [name for _, name in known]
        cuts = [reference.features[name].cuts for name in self.names]
        self.expected = [np.asarray(reference.features[name].counts) for name in self.names]
        self.offsets = np.cumsum([0, *(len(c) + 1 for c in cuts)])
        # One (features x most cuts) matrix, NaN-padded (NaN <= x is False), so a batch is binned by one
        # broadcast comparison instead of a searchsorted per feature: bin = number of cuts <= x, which is
        # searchsorted(cuts, x, side="right"), the reference's rule.
        self.cut_matrix = np.full((len(cuts), max((len(c) for c in cuts), default=0)), np.nan)
        for row, values in enumerate(cuts):
            self.cut_matrix[row, :len(values)] = values
        self.score_cuts = None if reference.score is None else np.asarray(reference.score.cuts)
        self.score_expected = None if reference.score is None else np.asarray(reference.score.counts)
        score_bins = 0 if reference.score is None else reference.score.bins
        self.slot_s = window_s / slots
        self.clock = clock
        self._counts = np.zeros((slots, int(self.offsets[-1])), dtype=np.int64)
        self._scores = np.zeros((slots, score_bins), dtype=np.int64)
        self._rows = np.zeros((slots, 2), dtype=np.int64)  # (feature rows, score rows) per slot
        self._epochs = np.full(slots, -1, dtype=np.int64)
        self._lock = threading.Lock()

    def _slot(self, epoch: int) -> int:
        """The ring position of `epoch`, zeroed first if it still holds an older slot (lock held)."""
        position = epoch % len(self._epochs)
        if self._epochs[position] != epoch:
            self._counts[position] = 0
            self._scores[position] = 0
            self._rows[position] = 0
            self._epochs[position] = epoch
        return position

    def add(self, features: np.ndarray, scores: np.ndarray | None = None) -> None:
        """Count a batch: `features` rows in the router's column order, `scores` of the champion's rows."""
        flat = None
        if self.names:
            binned = (self.cut_matrix <= features[:, self.columns, None]).sum(axis=2)
            flat = (binned + self.offsets[:-1]).ravel()
        has_scores = scores is not None and len(scores) > 0 and self.score_cuts is not None
        score_bins = bin_index(self.score_cuts, scores) if has_scores else None  # type: ignore[arg-type]
        with self._lock:
            position = self._slot(int(self.clock() // self.slot_s))
            if flat is not None:
                self._counts[position] += np.bincount(flat, minlength=self._counts.shape[1])
                self._rows[position, 0] += features.shape[0]
            if score_bins is not None:
                self._scores[position] += np.bincount(score_bins, minlength=self._scores.shape[1])
                self._rows[position, 1] += len(score_bins)

    def _totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        epoch = int(self.clock() // self.slot_s)
        with self._lock:
            live = self._epochs > epoch - len(self._epochs)
            return self._counts[live].sum(axis=0), self._scores[live].sum(axis=0), self._rows[live].sum(axis=0)

    def psi(self, min_rows: int = MIN_ROWS) -> dict[str, float]:
        """PSI per feature (and `score`) over the window; features with fewer than `min_rows` rows left out."""
        counts, scores, rows = self._totals()
        result: dict[str, float] = {}
        if rows[0] >= min_rows:
            for name, expected, start, stop in zip(self.names, self.expected, self.offsets, self.offsets[1:],
                                                   strict=False):
                result[name] = psi(expected, counts[start:stop])
        if rows[1] >= min_rows and self.score_expected is not None:
            result[SCORE] = psi(self.score_expected, scores)
        return result


SMALL_BATCH_ROWS = 16  # batches below this are binned together (per-call numpy overhead dominates them)
PENDING_ROWS = 64


class SmallBatches:
    """Rows of small batches (mostly single requests) held until PENDING_ROWS of them, or the next tick,
    and then binned in one call: binning one row costs ~10 µs of numpy overhead, a tenth of a single
    request. A row is counted in the window's slot of when it is binned, at most one publish interval
    (= one slot) after it was scored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[DriftWindow, np.ndarray, np.ndarray]] = []
        self._rows = 0

    def add(self, window: DriftWindow, features: np.ndarray, scores: np.ndarray) -> None:
        with self._lock:
            self._items.append((window, features, scores))
            self._rows += features.shape[0]
            if self._rows < PENDING_ROWS:
                return
            items, self._items, self._rows = self._items, [], 0
        _bin(items)

    def flush(self) -> None:
        with self._lock:
            items, self._items, self._rows = self._items, [], 0
        _bin(items)


def _bin(items: list[tuple[DriftWindow, np.ndarray, np.ndarray]]) -> None:
    for window in {id(w): w for w, _, _ in items}.values():  # the champion may have changed in between
        mine = [(f, s) for w, f, s in items if w is window]
        window.add(np.concatenate([f for f, _ in mine]), np.concatenate([s for _, s in mine]))


class DriftMonitor(BackgroundLoop):
    """Follows the champion, keeps its window, and publishes PSI and training time from a daemon thread."""

    THREAD_PREFIX = "ferry-drift"

    def __init__(self, model: str, feature_names: Sequence[str], window_s: float, gauges: DriftGauges,
                 champion: Callable[[], str | None], facts: Callable[[str], VersionFacts],
                 clock: Clock = time.monotonic, min_rows: int = MIN_ROWS) -> None:
        self.model = model
        self.feature_names = tuple(feature_names)
        self.window_s = window_s
        self.publish_interval_s = min(max(window_s / SLOTS, MIN_PUBLISH_S), MAX_PUBLISH_S)
        self.gauges = gauges
        self.min_rows = min_rows
        self.version: str | None = None  # the champion whose facts are loaded
        self.window: DriftWindow | None = None
        self.facts = VersionFacts()
        self._champion = champion
        self._load_facts = facts
        self._clock = clock
        self._failing: str | None = None
        self._small = SmallBatches()
        super().__init__()

    def observe(self, champion: str, features: np.ndarray, champion_scores: Sequence[float] | np.ndarray) -> None:
        """Request path: count a scored batch when its champion is the one whose window is open."""
        window = self.window
        if window is None or champion != self.version or features.shape[0] == 0:
            return
        scores = np.asarray(champion_scores, dtype=np.float64)
        if features.shape[0] < SMALL_BATCH_ROWS:
            self._small.add(window, features, scores)
        else:
            window.add(features, scores)

    def tick(self) -> dict[str, float]:
        """Follow a champion change, then publish; returns what was published (for tests and logs)."""
        champion = self._champion()
        if champion is not None and champion != self.version and not self._switch(champion):
            return {}
        if self.facts.trained_at_s is not None:
            self.gauges.trained_at(self.facts.trained_at_s)
        self._small.flush()
        values = self.window.psi(self.min_rows) if self.window is not None else {}
        for feature, value in values.items():
            self.gauges.psi(feature, value)
        return values

    def _switch(self, champion: str) -> bool:
        try:
            facts = self._load_facts(champion)
        except Exception as exc:  # registry down or a broken reference: keep the old window, retry next tick
            if self._failing != champion:
                logger.warning("cannot read the drift reference of %s version %s (%s: %s); retrying",
                               self.model, champion, type(exc).__name__, str(exc)[:300])
            self._failing = champion
            return False
        self._failing = None
        self.version, self.facts = champion, facts
        self.window = None if facts.reference is None else DriftWindow(
            facts.reference, self.feature_names, self.window_s, self._clock)
        if facts.reference is None:
            logger.warning("%s version %s has no drift reference (registered without `ferry step register`?): "
                           "no drift metrics for it", self.model, champion)
        return True

    def _loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # a metrics bug must never take the router down
                logger.exception("drift monitor of %s failed; trying again", self.model)
            if self._stop.wait(self.publish_interval_s):
                return
