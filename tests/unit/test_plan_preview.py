"""`ferry plan --preview`: the judgement (pure), its report, and real training of both workloads on their samples."""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.cli.app import app
from ferry.plan import make_plan
from ferry.plan.preview import Preview, SideResult
from ferry.plan.report import as_markdown, as_text
from ferry.spec import load_specs
from ferry.spec.models import ModelSpec
from ferry.steps.preview import MAX_EPOCHS, SEEDS, preview_model, preview_plan

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def committed(name: str) -> ModelSpec:
    specs, _ = load_specs([ROOT / f"gitops/models/{name}.yaml"])
    return specs[0].model


def with_training(spec: ModelSpec, **update: object) -> ModelSpec:
    training = spec.spec.training.model_copy(update=update)
    return spec.model_copy(update={"spec": spec.spec.model_copy(update={"training": training})})


def side(**metrics: float) -> SideResult:
    return SideResult(metrics, rows=100, seconds=1.0)


def test_a_judged_metric_dropping_beyond_the_tolerance_fails_and_others_do_not_count() -> None:
    shape = {"model": "m", "judged": ("ndcg_at_10",), "tolerance": 0.02, "epochs": 3, "seeds": 3}
    within = Preview(**shape, base=side(ndcg_at_10=0.20, coverage_at_10=0.5), head=side(ndcg_at_10=0.185,
                                                                                        coverage_at_10=0.1))
    assert within.passed and within.regressions() == [] and within.delta("ndcg_at_10") == pytest.approx(-0.015)
    worse = Preview(**shape, base=side(ndcg_at_10=0.20), head=side(ndcg_at_10=0.17))
    assert not worse.passed and worse.regressions() == ["ndcg_at_10"] and "dropped" in worse.verdict
    assert not Preview(**shape, base=side(ndcg_at_10=0.2), head=side(ndcg_at_10=math.nan)).passed
    new = Preview(**shape, head=side(ndcg_at_10=0.1))
    assert new.passed and new.delta("ndcg_at_10") is None and "first version" in new.verdict
    broken = Preview(**shape, error="ValueError: no users")
    assert not broken.passed and broken.verdict == "failed: ValueError: no users"


def test_the_report_shows_each_metric_of_both_sides_with_the_judged_ones_marked() -> None:
    plan = make_plan({}, {})
    plan.previews.append(Preview("recommender", ("ndcg_at_10",), 0.02, 10, 3,
                                 base=side(ndcg_at_10=0.2, recall_at_10=0.3),
                                 head=side(ndcg_at_10=0.1, recall_at_10=0.31)))
    markdown = as_markdown(plan)
    assert "#### Metric preview" in markdown and "❌ `recommender`" in markdown
    assert "| **ndcg_at_10** | 0.2000 | 0.1000 | -0.1000 |" in markdown
    assert "| recall_at_10 | 0.3000 | 0.3100 | +0.0100 |" in markdown
    assert "preview recommender: FAILED" in as_text(plan) and plan.preview_failed


def test_the_recommender_preview_trains_both_sides_the_same_way() -> None:
    base = committed("recommender")
    same = preview_model(base, base, ROOT, 0.02, time.monotonic() + 300)
    assert same.passed, same.verdict
    assert same.head is not None and same.base is not None
    assert same.head.metrics == pytest.approx(same.base.metrics)  # same spec, same seeds: the same model
    assert same.epochs == MAX_EPOCHS and same.seeds == len(SEEDS) and same.judged == ("ndcg_at_10", "recall_at_10")
    assert same.head.rows < 40_000 and same.head.metrics["ndcg_at_10"] > 0.05  # the sample, and it learned
    slowed = with_training(base, params={**base.spec.training.params, "lr": 0.0001})
    worse = preview_model(base, slowed, ROOT, 0.02, time.monotonic() + 300)
    assert worse.regressions() == ["ndcg_at_10", "recall_at_10"], worse


def test_the_fraud_preview_trains_on_fewer_cards_and_a_budget_spent_is_a_failure() -> None:
    lite = committed("fraud-detector-lite")
    found = preview_model(None, lite, ROOT, 0.02, time.monotonic() + 300)
    assert found.passed and found.head is not None and set(found.head.metrics) >= {"auc_roc", "average_precision"}
    full = committed("fraud-detector")
    plan = preview_plan(make_plan({}, {"fraud-detector": full}), {}, {"fraud-detector": full}, ROOT, 0.02, budget_s=0)
    [late] = plan.previews
    assert not late.passed and "time budget" in late.error


def test_plan_preview_exits_1_on_a_change_that_makes_the_model_worse(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "gitops/models"
    models.mkdir(parents=True)
    spec = models / "recommender.yaml"
    spec.write_text((ROOT / "gitops/models/recommender.yaml").read_text())
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=a@b", "-c", "user.name=t", *args], check=True)
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    spec.write_text(spec.read_text().replace("lr: 0.005,", "lr: 0.0001,"))
    result = runner.invoke(app, ["plan", "--base", "main", "--preview", "--format", "markdown"])
    assert result.exit_code == 1, result.output
    assert "❌ `recommender`: worse: ndcg_at_10, recall_at_10 dropped by more than 0.02" in result.output
    spec.write_text(spec.read_text().replace("lr: 0.0001,", "lr: 0.005,").replace("epochs: 20", "epochs: 21"))
    result = runner.invoke(app, ["plan", "--base", "main", "--preview"])
    assert result.exit_code == 0, result.output
    assert "preview recommender: ok (within tolerance 0.02)" in " ".join(result.output.split())
