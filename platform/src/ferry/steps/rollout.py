"""`ferry step rollout`: the last step. A first version is promoted directly; a later one becomes the
challenger and walks the spec's weight steps under the canary controller (ferry.rollout), which
promotes it or rolls it back from Prometheus evidence.

MLflow unreachable for longer than the controller's bound ends the step with a message, never a traceback:
before the canary started (nothing moved) as a transient failure the retry strategy reruns; at a promote
or rollback as a failure a person finishes by hand (the message says with which command), because a
rerun would restart the canary of a version the controller had already judged.
"""

from __future__ import annotations

import contextlib
import time

from ferry.adapters.prometheus import Prometheus
from ferry.adapters.registry_port import RegistryUnavailable
from ferry.contract import names
from ferry.contract.errors import StepFailed, TransientStepError
from ferry.rollout.controller import Controller, RolloutStuck, prometheus_observer
from ferry.rollout.metrics import RolloutMetrics
from ferry.rollout.policy import Action
from ferry.serving.feedback import takes_feedback
from ferry.steps.context import StepContext
from ferry.steps.feedback import FeedbackOutcomes
from ferry.steps.outcomes import LogOutcomes


def run(ctx: StepContext) -> None:
    version = ctx.registry.version_for_workflow(ctx.model, ctx.workflow)
    if version is None:
        ctx.emit({names.OUTPUT_DECISION: names.DECISION_NOTHING_REGISTERED})
        return
    state = version.tags.get(names.TAG_ROLLOUT_STATE, "")
    if state in names.FINAL_ROLLOUT_STATES:
        ctx.emit({names.OUTPUT_DECISION: state})  # a rerun of a finished rollout changes nothing
        return
    prom = Prometheus(ctx.settings.prometheus_url)
    metrics = RolloutMetrics()
    serving = False
    with contextlib.suppress(OSError):  # another rollout exports on this port; decisions are still tagged
        metrics.serve(ctx.settings.rollout_metrics_host, ctx.settings.rollout_metrics_port)
        serving = True
    # The shadow stage and the judgement on labels (or a ranking's feedback) read the log serving writes.
    outcomes: FeedbackOutcomes | LogOutcomes | None = None
    if ctx.spec.spec.rollout.shadow is not None:
        source = FeedbackOutcomes if takes_feedback(ctx.workload) else LogOutcomes
        outcomes = source(ctx.settings.prediction_log_uri, ctx.model, ctx.workload)
    controller = Controller(ctx.registry, ctx.spec, prometheus_observer(prom, ctx.model), metrics=metrics,
                            outcomes=outcomes)
    try:
        outcome = controller.run(str(version.version))
    except RegistryUnavailable as exc:
        raise TransientStepError(f"rollout: {exc}") from None
    except RolloutStuck as exc:
        raise StepFailed(f"rollout: {exc}") from None
    finally:
        prom.close()
    promoted = outcome.action is Action.PROMOTE
    ctx.emit({names.OUTPUT_DECISION: names.STATE_PROMOTED if promoted else names.STATE_ROLLED_BACK,
              names.OUTPUT_REASON: outcome.reason})
    if serving:  # the decision counter (FerryModelCanaryRolledBack counts it) must outlive one scrape
        time.sleep(ctx.settings.rollout_metrics_linger_s)
