"""The controller's writes, driven by an in-memory registry, a fake clock and scripted observations; the
people's promote/abort (ferry.rollout.actions and the CLI) on the same registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry
from tests.support.registry_contract import registered
from typer.testing import CliRunner

from ferry.adapters.prometheus_port import PrometheusUnavailable
from ferry.adapters.registry_memory import MemoryRegistry
from ferry.adapters.registry_port import RegistryUnavailable, RolloutView
from ferry.contract import names
from ferry.contract.errors import StepFailed, TransientStepError
from ferry.rollout import actions
from ferry.rollout.controller import SETTLE_S, Controller, RolloutStuck
from ferry.rollout.metrics import RolloutMetrics
from ferry.rollout.policy import Action, Observation, VariantStats
from ferry.spec import load_specs

ROOT = Path(__file__).resolve().parents[3]
EPOCH = 1_800_000_000.0
SHAPE = (40, 20, 12, 8, 6, 4, 3, 2, 2, 1, 1, 1)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def time(self) -> float:
        return EPOCH + self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


MODEL = "fraud-detector"


class Lab:
    """The in-memory registry with versions 1-3 of the model, the given aliases, a fake clock, and MLflow
    down (every registry call raises) while the clock is inside an outage [start, end) or a fault says so."""

    def __init__(self, aliases: dict[str, str] | None = None, outages: list[tuple[float, float]] | None = None,
                 faults: Callable[[str], bool] | None = None, model: str = MODEL) -> None:
        self.clock, self.model = FakeClock(), model
        self.outages: list[tuple[float, float]] = []
        self.extra_faults: Callable[[str], bool] = lambda operation: False
        self.registry = MemoryRegistry(faults=self._down, now=lambda: self.clock.t)
        registered(self.registry, model, 3)
        for alias, version in (aliases or {}).items():
            self.registry.set_alias(model, alias, version)
        self.registry.writes.clear()
        self.outages, self.extra_faults = outages or [], faults or self.extra_faults  # from here on

    def _down(self, operation: str) -> bool:
        return any(start <= self.clock.t < end for start, end in self.outages) or self.extra_faults(operation)

    @property
    def aliases(self) -> dict[str, str]:
        return self.registry.aliases(self.model)

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.registry.version(self.model, version).tags)

    @property
    def weight_writes(self) -> list[tuple[float, str]]:
        return [(w.at, w.values[names.TAG_ROLLOUT_WEIGHT]) for w in self.registry.writes
                if w.operation == "tag_version" and names.TAG_ROLLOUT_WEIGHT in w.values]

    @property
    def weights(self) -> list[str]:
        return [weight for _, weight in self.weight_writes]


def failing_first(count: int, operation: str) -> Callable[[str], bool]:
    left = [count]

    def fault(name: str) -> bool:
        if name == operation and left[0] > 0:
            left[0] -= 1
            return True
        return False

    return fault


def spec():
    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])
    return specs[0].model


def controller(lab: Lab, observe, **kwargs) -> Controller:
    return Controller(lab.registry, spec(), observe, lab.clock, RolloutMetrics(CollectorRegistry()), **kwargs)


def variant(n: float, errors: float) -> VariantStats:
    return VariantStats(n, errors, 12.0, tuple(n * s / sum(SHAPE) for s in SHAPE))


@dataclass
class Traffic:
    """Counts that grow at every look, as Prometheus' would under steady traffic (unless `frozen`)."""

    challenger_error_rate: float = 0.0
    frozen: bool = False
    looks: list[float] = field(default_factory=list)

    def __call__(self, champion: str, challenger: str, since: float) -> Observation:
        self.looks.append(since)
        n = 600.0 * (1 if self.frozen else len(self.looks))
        return Observation(variant(4 * n, 0), variant(n, round(n * self.challenger_error_rate)))


def silent(champion: str, challenger: str, since: float) -> Observation:
    raise PrometheusUnavailable("connection refused")


def test_first_version_is_promoted_directly() -> None:
    lab = Lab()
    outcome = controller(lab, Traffic()).run("1")
    assert outcome.action is Action.PROMOTE and lab.aliases == {"champion": "1"}


def test_good_challenger_walks_the_steps_and_is_promoted() -> None:
    lab = Lab(aliases={"champion": "1"})
    traffic = Traffic()
    outcome = controller(lab, traffic).run("2")
    assert outcome.action is Action.PROMOTE
    assert lab.weights == ["10", "25", "50", "100"]
    assert lab.aliases == {"champion": "2"}
    assert lab.tags("1")[names.TAG_ROLLOUT_STATE] == "retired"
    assert '"error_rate_upper"' in lab.tags("2")["ferry.rollout.check.001"]


def test_each_step_is_judged_from_its_own_start() -> None:
    traffic = Traffic()
    controller(Lab(aliases={"champion": "1"}), traffic).run("2")
    interval = 30.0
    # step 1 counts from the challenger's start; later ones from their weight change plus the export lag
    assert traffic.looks == [EPOCH, EPOCH + interval + SETTLE_S, EPOCH + 2 * interval + SETTLE_S]


def test_erroring_challenger_is_rolled_back_after_failure_limit() -> None:
    lab = Lab(aliases={"champion": "1"})
    outcome = controller(lab, Traffic(challenger_error_rate=0.06)).run("2")
    assert outcome.action is Action.ROLLBACK and outcome.checks == 2
    assert lab.aliases == {"champion": "1"}
    assert lab.tags("2")[names.TAG_ROLLOUT_STATE] == "rolled-back"
    assert lab.weights[-1] == "0"


def test_one_scrape_read_twice_is_not_two_failed_checks() -> None:
    lab = Lab(aliases={"champion": "1"})
    outcome = controller(lab, Traffic(challenger_error_rate=0.06, frozen=True)).run("2")
    assert outcome.action is Action.ROLLBACK and outcome.reason.startswith("no evidence within 10m")
    checks = [v for k, v in lab.tags("2").items() if k.startswith(names.TAG_ROLLOUT_CHECK_PREFIX)]
    assert len(checks) == 2 and '"verdict": "fail"' in checks[0] and '"verdict": "stale"' in checks[1]


def test_no_metrics_never_promotes_and_times_out() -> None:
    lab = Lab(aliases={"champion": "1"})
    outcome = controller(lab, silent).run("2")
    assert outcome.action is Action.ROLLBACK and "no evidence within 10m" in outcome.reason
    assert lab.aliases == {"champion": "1"}


def test_registry_outage_is_retried() -> None:
    lab = Lab(aliases={"champion": "1"}, faults=failing_first(2, "set_alias"))
    assert controller(lab, Traffic()).run("2").action is Action.PROMOTE


def records(lab: Lab, version: str = "2") -> dict[str, dict]:
    return {k.rsplit(".", 1)[-1]: json.loads(v) for k, v in sorted(lab.tags(version).items())
            if k.startswith(names.TAG_ROLLOUT_CHECK_PREFIX)}


def test_an_outage_longer_than_the_old_retries_during_the_walk_holds_then_finishes() -> None:
    # MLflow down from 35 s to 235 s (the old retry loop gave up after 31 s): the 50 % step is decided at
    # 60 s, 90 s, ... but its weight write only lands at 240 s; the rollout then promotes normally.
    lab = Lab(aliases={"champion": "1"}, outages=[(35.0, 235.0)])
    traffic = Traffic()
    outcome = controller(lab, traffic).run("2")
    assert outcome.action is Action.PROMOTE and lab.aliases == {"champion": "2"}
    assert lab.weights == ["10", "25", "50", "100"]
    assert [w for w in lab.weight_writes if w[1] == "50"] == [(240.0, "50")]
    # the checks held on the 25 % step all counted from its start: `since` did not move
    assert traffic.looks[1:8] == [EPOCH + 30 + SETTLE_S] * 7 and traffic.looks[8] == EPOCH + 240 + SETTLE_S
    written = records(lab)
    assert list(written) == [f"{n:03d}" for n in range(1, outcome.checks + 1)]  # every record, flushed
    held = [r for r in written.values() if r["action"] == "hold"]
    assert len(held) == 6 and all(r["weight"] == 25 and "did not take weight 50%" in r["reason"] for r in held)


def test_no_advance_until_the_weight_write_lands() -> None:
    lab = Lab(aliases={"champion": "1"}, outages=[(55.0, 125.0)])
    controller(lab, Traffic()).run("2")
    assert lab.weight_writes == [(0.0, "10"), (30.0, "25"), (150.0, "50"), (180.0, "100")]
    written = records(lab)
    assert [(r["action"], r["weight"]) for r in written.values()] == [
        ("advance", 25), ("hold", 25), ("hold", 25), ("hold", 25), ("advance", 50), ("promote", 100)]


def test_a_terminal_outage_within_the_bound_still_rolls_back() -> None:
    lab = Lab(aliases={"champion": "1"}, outages=[(55.0, 455.0)])
    outcome = controller(lab, Traffic(challenger_error_rate=0.06)).run("2")
    assert outcome.action is Action.ROLLBACK and lab.aliases == {"champion": "1"}
    assert lab.tags("2")[names.TAG_ROLLOUT_STATE] == "rolled-back"
    assert lab.weight_writes[-1][1] == "0" and 455.0 <= lab.weight_writes[-1][0] < 455.0 + 30
    assert list(records(lab)) == ["001", "002"]


def test_a_terminal_outage_past_the_bound_says_where_the_aliases_are() -> None:
    lab = Lab(aliases={"champion": "1"}, outages=[(55.0, 10_000.0)])
    with pytest.raises(RolloutStuck) as stuck:
        controller(lab, Traffic(challenger_error_rate=0.06), registry_timeout_s=900).run("2")
    message = str(stuck.value)
    assert "could not rollback fraud-detector v2: MLflow unreachable for 900 s (the registry is unavailable" in message
    assert "Nothing was changed" in message and "`ferry rollout abort fraud-detector`" in message
    assert stuck.value.user_message == message  # a FerryError: the CLI prints exactly this
    assert 60 + 900 <= lab.clock.t < 60 + 900 + 31  # bounded: gave up once the bound had passed
    lab.outages.clear()
    assert lab.aliases == {"champion": "1", "challenger": "2"}


def test_default_bound_is_the_hold_timeout_or_ten_minutes() -> None:
    assert controller(Lab(), Traffic()).registry_timeout_s == 600.0


def test_a_half_done_promote_names_the_state_and_the_command() -> None:
    # the champion alias lands, then MLflow stops answering for good
    lab = Lab(aliases={"champion": "1"}, faults=lambda operation: operation == "delete_alias")
    with pytest.raises(RolloutStuck) as stuck:
        controller(lab, Traffic(), registry_timeout_s=120).run("2")
    assert lab.aliases == {"champion": "2", "challenger": "2"}
    assert "already points at v2" in str(stuck.value) and "`ferry rollout promote fraud-detector`" in str(stuck.value)


def test_registry_unreachable_at_start_is_retried_then_refused_clearly() -> None:
    lab = Lab(aliases={"champion": "1"}, outages=[(0.0, 200.0)])
    assert controller(lab, Traffic()).run("2").action is Action.PROMOTE
    assert lab.weight_writes[0][0] >= 200.0
    down = Lab(aliases={"champion": "1"}, outages=[(0.0, 10_000.0)])
    with pytest.raises(RegistryUnavailable, match=r"could not read the aliases of fraud-detector from MLflow "
                                                  r"within 600 s .*nothing was changed: rerun the step"):
        controller(down, Traffic()).run("2")
    down.outages.clear()
    assert down.aliases == {"champion": "1"} and down.registry.writes == []


def test_by_hand_promote_and_abort_share_the_controller_writes() -> None:
    lab = Lab(aliases={"champion": "1", "challenger": "2"}, model="m")
    actions.by_hand(lab.registry, "m", Action.PROMOTE)
    assert lab.aliases == {"champion": "2"} and lab.tags("1")[names.TAG_ROLLOUT_STATE] == "retired"
    assert lab.tags("2")[names.TAG_ROLLOUT_REASON] == "promoted by hand"
    lab.registry.set_alias("m", "challenger", "3")
    actions.by_hand(lab.registry, "m", Action.ROLLBACK)
    assert lab.aliases == {"champion": "2"} and lab.tags("3")[names.TAG_ROLLOUT_WEIGHT] == "0"
    with pytest.raises(actions.NoChallenger, match="no challenger to abort"):
        actions.by_hand(lab.registry, "m", Action.ROLLBACK)


def test_cli_promote_and_abort(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.cli import rollout as cli

    lab = Lab(aliases={"champion": "1", "challenger": "2"})
    monkeypatch.setattr(cli, "_registry", lambda: lab.registry)
    result = CliRunner().invoke(cli.rollout_app, ["abort", "fraud-detector"])
    assert result.exit_code == 0 and "v2 rolled back; v1 serves all traffic" in result.output
    again = CliRunner().invoke(cli.rollout_app, ["promote", "fraud-detector"])
    assert again.exit_code == 1 and "no challenger to promote" in again.output
    lab.registry.set_alias(MODEL, "challenger", "3")
    promoted = CliRunner().invoke(cli.rollout_app, ["promote", "fraud-detector"])
    assert promoted.exit_code == 0 and "v3 is now champion" in promoted.output


def test_cli_status_shows_the_rolled_back_version_and_its_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.cli import rollout as cli

    lab = Lab(aliases={"champion": "1"})
    controller(lab, Traffic(challenger_error_rate=0.06)).run("2")
    monkeypatch.setattr(cli, "_registry", lambda: lab.registry)
    result = CliRunner().invoke(cli.rollout_app, ["status", "fraud-detector"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "champion v1, challenger v- at 0%" in result.output
    assert "v2: state rolled-back, weight 0, reason 2 failed checks: error rate +0.0600 exceeds" in result.output
    assert "600/600" not in result.output and "2400/600" in result.output and "fail" in result.output
    status = actions.status(lab.registry, "fraud-detector")
    assert status.version == "2" and [n for n, _ in status.checks] == ["001", "002"]
    assert status.checks[0][1]["requests"] == [2400.0, 600.0] and status.checks[1][1]["verdict"] == "fail"


def test_status_of_a_model_without_rollouts_shows_the_champion() -> None:
    lab = Lab(aliases={"champion": "1"})
    status = actions.status(lab.registry, MODEL)
    assert (status.version, status.state, status.checks) == ("1", "-", ())
    assert actions.status(lab.registry, "unknown-model") == actions.RolloutStatus(RolloutView(), None)


@pytest.mark.parametrize(("error", "expected"), [
    (RegistryUnavailable("could not read the aliases"), TransientStepError),
    (RolloutStuck("could not rollback m v2: ... `ferry rollout abort m`"), StepFailed)])
def test_step_turns_a_registry_outage_into_a_clear_step_failure(monkeypatch: pytest.MonkeyPatch,
                                                               error: Exception, expected: type) -> None:
    from ferry.steps import rollout as step

    class Failing:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def run(self, version: str) -> None:
            raise error

    class Quiet(RolloutMetrics):
        def serve(self, host: str, port: int) -> None:
            pass

    monkeypatch.setattr(step, "Controller", Failing)
    monkeypatch.setattr(step, "RolloutMetrics", Quiet)
    registry = MemoryRegistry()
    registered(registry, "m", 1, **{names.TAG_WORKFLOW: "w"})
    ctx = SimpleNamespace(registry=registry, model="m", workflow="w", spec=spec(), emit=lambda values: None,
                          settings=SimpleNamespace(prometheus_url="http://127.0.0.1:9",
                                                   rollout_metrics_host="127.0.0.1", rollout_metrics_port=0,
                                                   rollout_metrics_linger_s=0.0))
    with pytest.raises(StepFailed) as failed:
        step.run(ctx)  # type: ignore[arg-type]
    assert type(failed.value) is expected and failed.value.user_message == f"rollout: {error}"


def test_step_serves_its_metrics_where_settings_say_and_outlives_a_scrape_after_deciding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a cluster the step binds the pod IP and lingers so Prometheus scrapes its last decision (the counter
    FerryModelCanaryRolledBack counts) before the pod ends; outputs are written before it waits."""
    from ferry.steps import rollout as step

    events: list[tuple[str, object]] = []

    class Deciding:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def run(self, version: str) -> SimpleNamespace:
            return SimpleNamespace(action=Action.ROLLBACK, reason="errors")

    class Recorded(RolloutMetrics):
        def serve(self, host: str, port: int) -> None:
            events.append(("serve", (host, port)))

    monkeypatch.setattr(step, "Controller", Deciding)
    monkeypatch.setattr(step, "RolloutMetrics", Recorded)
    monkeypatch.setattr(step.time, "sleep", lambda s: events.append(("sleep", s)))
    registry = MemoryRegistry()
    registered(registry, "m", 1, **{names.TAG_WORKFLOW: "w"})
    ctx = SimpleNamespace(registry=registry, model="m", workflow="w", spec=spec(),
                          emit=lambda values: events.append(("emit", values[names.OUTPUT_DECISION])),
                          settings=SimpleNamespace(prometheus_url="http://127.0.0.1:9",
                                                   rollout_metrics_host="10.1.2.3", rollout_metrics_port=9097,
                                                   rollout_metrics_linger_s=30.0))
    step.run(ctx)  # type: ignore[arg-type]
    assert events == [("serve", ("10.1.2.3", 9097)), ("emit", names.STATE_ROLLED_BACK), ("sleep", 30.0)]
