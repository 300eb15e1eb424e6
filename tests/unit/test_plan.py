"""Plan classification, pure: which change means retrain, redeploy or policy only."""

from __future__ import annotations

from pathlib import Path

from ferry.plan import make_plan
from ferry.plan.report import as_json, as_markdown
from ferry.spec import load_specs

ROOT = Path(__file__).resolve().parents[2]


def model():
    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])
    return specs[0].model


def with_body(m, section: str, **update):
    part = getattr(m.spec, section).model_copy(update=update)
    return m.model_copy(update={"spec": m.spec.model_copy(update={section: part})})


def action(old, new) -> str:
    return make_plan({"fraud-detector": old}, {"fraud-detector": new}).models[0].action


def test_classification() -> None:
    m = model()
    assert action(m, m) == "unchanged"
    assert action(m, with_body(m, "training", epochs=9)) == "retrain"
    assert action(m, with_body(m, "serving", max_ongoing_requests=70)) == "redeploy"
    assert action(m, with_body(m, "rollout", interval="1m")) == "policy"
    assert action(m, with_body(m, "monitoring", drift_psi_alert=0.3)) == "policy"


def test_new_and_removed_and_objects() -> None:
    m = model()
    plan = make_plan({}, {"fraud-detector": m})
    assert plan.models[0].action == "new"
    assert "fraud-detector/Workflow/fraud-detector-" + plan.models[0].new_hash in plan.models[0].objects
    removed = make_plan({"fraud-detector": m}, {})
    assert removed.models[0].action == "removed"
    kinds = removed.models[0].objects
    assert any(v == "kept" for k, v in kinds.items() if "/Workflow/" in k)
    assert any(v == "deleted" for k, v in kinds.items() if "/WorkflowTemplate/" in k)


def test_retrain_lists_hashes_and_renders() -> None:
    m = model()
    plan = make_plan({"fraud-detector": m}, {"fraud-detector": with_body(m, "training", epochs=9)})
    change = plan.models[0]
    assert change.old_hash != change.new_hash
    assert [c.path for c in change.changes] == ["spec.training.epochs"]
    assert f"`{change.old_hash} → {change.new_hash}`" in as_markdown(plan)
    assert '"action": "retrain"' in as_json(plan)
