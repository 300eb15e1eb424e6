"""Semantic checks across files: names, routes, weights, GPUs, cron, search space, workloads."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from ferry.spec import load_spec_text
from ferry.spec.checks import WorkloadFacts, run_checks


class DataKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    customers: int = Field(10, ge=1)
    terminals: int = 10
    days: int = 10
    seed: int = 0


class Hyper(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    hidden: int = Field(8, ge=1)
    lr: float = Field(0.1, gt=0, le=1)
    dropout: float = 0.0


def loaded(text: str, file: str = "m.yaml"):
    spec, errors = load_spec_text(text, file)
    assert errors == [], errors
    return spec


def paths(errors) -> set[str]:
    return {e.path for e in errors}


def test_examples_pass(example_text: str) -> None:
    assert run_checks([loaded(example_text)]) == []


def test_duplicate_names_and_routes(example_text: str) -> None:
    errors = run_checks([loaded(example_text, "a.yaml"), loaded(example_text, "b.yaml")])
    assert {"metadata.name", "spec.serving.route"} <= paths(errors)
    assert all(e.file == "b.yaml" for e in errors)


def test_route_prefix_collision(example_text: str) -> None:
    other = example_text.replace("name: fraud-detector", "name: other").replace(
        "route: /fraud-detector", "route: /fraud-detector/v2")
    errors = run_checks([loaded(example_text), loaded(other, "o.yaml")])
    assert paths(errors) == {"spec.serving.route"}


def test_rollout_steps(example_text: str) -> None:
    for steps, needle in [("[10, 5, 100]", "rise"), ("[10, 50]", "last weight"), ("[0, 100]", "1..100")]:
        errors = run_checks([loaded(example_text.replace("steps: [10, 25, 50, 100]", f"steps: {steps}"))])
        assert len(errors) == 1 and needle in errors[0].message, steps


def test_gpu_requests(example_text: str) -> None:
    text = example_text.replace("gpus_per_worker: 0", "gpus_per_worker: 1.5")
    [error] = run_checks([loaded(text)])
    assert error.path == "spec.training.resources.gpus_per_worker" and "2" in error.hint


def test_cron(example_text: str) -> None:
    [error] = run_checks([loaded(example_text.replace('"0 3 * * 1"', '"0 25 * * 1"'))])
    assert error.path == "spec.schedule" and error.line > 1


def test_search_space_bounds(example_text: str) -> None:
    text = example_text.replace("[1.0e-4, 1.0e-2]", "[0.0, 1.0e-2]").replace("[32, 64, 128]", "[32, 32]")
    errors = run_checks([loaded(text)])
    assert paths(errors) == {"spec.training.tune.space.lr.loguniform", "spec.training.tune.space.hidden.choice"}


def test_batching_against_ongoing_requests(example_text: str) -> None:
    [error] = run_checks([loaded(example_text.replace("max_ongoing_requests: 64", "max_ongoing_requests: 5"))])
    assert "batches can never fill" in error.message


def test_workload_facts(example_text: str) -> None:
    facts = {"fraud_detection": WorkloadFacts(metrics=("auc_roc", "average_precision"), data_params=DataKnobs,
                                              training_params=Hyper)}
    text = example_text.replace("customers: 1000", "custmers: 1000").replace(
        "metric: auc_roc", "metric: auc")
    errors = run_checks([loaded(text)], facts)
    hints = {e.path: e.hint for e in errors}
    assert hints["spec.data.params.custmers"] == "did you mean 'customers'?"
    assert "auc_roc" in hints["spec.evaluation.gates.0.metric"]
    unknown = run_checks([loaded(example_text.replace("workload: fraud_detection", "workload: fraud_detect"))], facts)
    assert unknown[0].hint == "did you mean 'fraud_detection'?"


def test_workload_params_are_typed_by_the_workload_models(example_text: str) -> None:
    facts = {"fraud_detection": WorkloadFacts(metrics=("auc_roc", "average_precision"), data_params=DataKnobs,
                                              training_params=Hyper, tunable=("lr",))}
    assert run_checks([loaded(example_text)], {"fraud_detection": WorkloadFacts(
        metrics=("auc_roc", "average_precision"), data_params=DataKnobs, training_params=Hyper)}) == []
    text = example_text.replace("customers: 1000", "customers: 0").replace("hidden: 64", "hidden: 1.5")
    errors = {e.path: e for e in run_checks([loaded(text)], facts)}
    assert set(errors) == {"spec.data.params.customers", "spec.training.params.hidden",
                           "spec.training.tune.space.hidden"}
    assert "not a tunable" not in errors["spec.training.tune.space.hidden"].message
    assert errors["spec.training.tune.space.hidden"].hint == "known: lr"


def test_tunable_names_must_be_training_params() -> None:
    with pytest.raises(ValueError, match="hiden"):
        WorkloadFacts(metrics=(), data_params=DataKnobs, training_params=Hyper, tunable=("hiden",))


SIMULATED = '''    source: simulator
    params: {customers: 1000, terminals: 2000, days: 60, seed: 0}
    split: {train_start: "2018-05-02", train_days: 7, delay_days: 7, test_days: 7}'''


def log_data(window: str, split: str = "{train_days: 7, delay_days: 7, test_days: 7}") -> str:
    return f"    source: log\n    window: {window}\n    split: {split}"


@pytest.mark.parametrize(("data", "needle"), [
    ("    source: log\n    split: {train_days: 7, delay_days: 7, test_days: 7}", "needs a 'window'"),
    (SIMULATED + "\n    window: {days: 28}", "takes no 'window'"),
    (log_data("{days: 28}", '{train_start: "2018-05-02", train_days: 7, delay_days: 7, test_days: 7}'),
     "remove split.train_start"),
    (SIMULATED.replace('train_start: "2018-05-02", ', ""), "needs split.train_start"),
])
def test_a_log_source_and_its_window_go_together(example_text: str, data: str, needle: str) -> None:
    assert SIMULATED in example_text
    spec, errors = load_spec_text(example_text.replace(SIMULATED, data), "m.yaml")
    assert spec is None and len(errors) == 1 and needle in errors[0].message, errors
    assert errors[0].path == "spec.data" and errors[0].line > 1


def test_a_log_window_must_hold_the_split(example_text: str) -> None:
    spec = loaded(example_text.replace(SIMULATED, log_data("{days: 20, label_delay_days: 7}")))
    [error] = run_checks([spec])
    assert error.path == "spec.data.window.days" and "needs 21" in error.message and "at least 21" in error.hint
    assert error.line > 1
    assert run_checks([loaded(example_text.replace(SIMULATED, log_data("{days: 21}")))]) == []


def test_only_a_workload_that_reads_its_log_may_train_on_it(example_text: str) -> None:
    spec = loaded(example_text.replace(SIMULATED, log_data("{days: 28}")))
    facts = dict(metrics=("auc_roc", "average_precision"), data_params=DataKnobs, training_params=Hyper)
    [error] = run_checks([spec], {"fraud_detection": WorkloadFacts(**facts)})
    assert error.path == "spec.data.source" and "cannot train on served traffic" in error.message
    assert run_checks([spec], {"fraud_detection": WorkloadFacts(**facts, reads_log=True)}) == []


def test_a_source_the_workload_does_not_read_is_named_with_the_ones_it_does(example_text: str) -> None:
    spec = loaded(example_text.replace("    source: simulator\n", "    source: dataset\n"))
    facts = dict(metrics=("auc_roc", "average_precision"), data_params=DataKnobs, training_params=Hyper)
    [error] = run_checks([spec], {"fraud_detection": WorkloadFacts(**facts)})
    assert error.path == "spec.data.source" and "'dataset'" in error.message and error.line > 1
    assert error.hint == "use source: simulator or parquet"
    reads_it = WorkloadFacts(**facts, sources=("dataset", "parquet"))
    assert run_checks([spec], {"fraud_detection": reads_it}) == []


ROLLOUT_STEPS = "    steps: [10, 25, 50, 100]\n"


def with_rollout(example_text: str, extra: str) -> str:
    assert ROLLOUT_STEPS in example_text
    return example_text.replace(ROLLOUT_STEPS, ROLLOUT_STEPS + extra)


def test_judging_outcomes_needs_a_shadow_stage(example_text: str) -> None:
    spec = loaded(with_rollout(example_text, "    outcomes: {metrics: [average_precision], margin: 0.02}\n"))
    [error] = run_checks([spec])
    assert error.path == "spec.rollout.outcomes" and "shadow" in error.hint and error.line > 1
    both = "    shadow: {duration: 5m, sample: 0.5}\n    outcomes: {metrics: [average_precision]}\n"
    assert run_checks([loaded(with_rollout(example_text, both))]) == []


def test_outcome_metrics_and_shadow_need_a_workload_that_logs(example_text: str) -> None:
    both = "    shadow: {duration: 5m}\n    outcomes: {metrics: [average_precison]}\n"
    spec = loaded(with_rollout(example_text, both))
    facts = dict(metrics=("auc_roc", "average_precision"), data_params=DataKnobs, training_params=Hyper)
    errors = run_checks([spec], {"fraud_detection": WorkloadFacts(**facts)})
    assert paths(errors) == {"spec.rollout.shadow", "spec.rollout.outcomes.metrics.0"}
    typo = next(e for e in errors if e.path.endswith("metrics.0"))
    assert "average_precision" in typo.hint
    assert paths(run_checks([spec], {"fraud_detection": WorkloadFacts(**facts, reads_log=True)})) == {
        "spec.rollout.outcomes.metrics.0"}


@pytest.mark.parametrize(("extra", "needle"), [
    ("    shadow: {sample: 0}\n", "greater than 0"),
    ("    shadow: {duration: soon}\n", "duration"),
    ("    outcomes: {confidence: 1.5}\n", "less than 1"),
])
def test_bad_shadow_and_outcome_values_name_the_field(example_text: str, extra: str, needle: str) -> None:
    spec, errors = load_spec_text(with_rollout(example_text, extra), "m.yaml")
    assert spec is None and len(errors) == 1 and needle in errors[0].message, errors
    assert errors[0].path.startswith("spec.rollout.") and errors[0].line > 1


def test_a_ranking_workload_with_feedback_judges_outcomes_on_the_hit_rate_only(example_text: str) -> None:
    facts = dict(metrics=("ndcg_at_10", "recall_at_10"), data_params=DataKnobs, training_params=Hyper)
    text = example_text.replace("metric: average_precision", "metric: ndcg_at_10").replace(
        "metric: auc_roc", "metric: recall_at_10")
    judged = loaded(with_rollout(text, "    shadow: {duration: 5m}\n    outcomes: {metrics: [hit_rate]}\n"))
    assert run_checks([judged], {"fraud_detection": WorkloadFacts(**facts, feedback=True)}) == []
    errors = run_checks([judged], {"fraud_detection": WorkloadFacts(**facts)})  # no feedback: nothing to judge
    assert paths(errors) == {"spec.rollout.shadow", "spec.rollout.outcomes.metrics.0"}
    assert "feedback" in next(e for e in errors if e.path == "spec.rollout.shadow").message
    offline = loaded(with_rollout(text, "    shadow: {duration: 5m}\n    outcomes: {metrics: [ndcg_at_10]}\n"))
    [error] = run_checks([offline], {"fraud_detection": WorkloadFacts(**facts, feedback=True)})
    assert error.path == "spec.rollout.outcomes.metrics.0" and "hit_rate" in error.message + error.hint
