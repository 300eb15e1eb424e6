"""`ferry submit`: start a pipeline run now, on a cluster (with --argo-server) or locally.

The Argo Server options it shares with `ferry runs|logs` are in ferry.cli.options.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ferry.cli.options import ArgoServerOption, NamespaceOption, connect
from ferry.cli.output import console, err_console
from ferry.cli.tables import following_runs, outcomes_table
from ferry.contract import names
from ferry.settings import load_settings


def submit(
    model: Annotated[str, typer.Argument(help="Model name (a spec in gitops/models).")],
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="Train again under a new run name even if this spec hash was trained before.")] = False,
    reason: Annotated[str, typer.Option(help="Why, recorded on the run (annotation ferry.dev/reason).")] =
        "submitted by hand",
    argo_server: ArgoServerOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Start a pipeline run of MODEL now: on the cluster from its WorkflowTemplate, or locally."""
    if argo_server:
        with connect(argo_server, namespace) as server:
            workflow, created = server.submit(model, retrain=retrain, reason=reason)
        _print_submitted(workflow, created)
        return
    if retrain:
        _retrain_locally(model, reason)
    else:
        _run_locally(model)


def _print_submitted(workflow: dict[str, Any], created: bool) -> None:
    name = (workflow.get("metadata") or {}).get("name", "")
    phase = (workflow.get("status") or {}).get("phase") or "Pending"
    if created:
        console.print(f"submitted {name} ({phase})")
    else:
        console.print(f"{name} exists already ({phase}): use --retrain to train this spec again")
    console.print(f"  follow it with: ferry runs show {name}   (same --argo-server)")


def _retrain_locally(model: str, reason: str) -> None:
    from ferry.local.alerts.retrain import start_retraining
    from ferry.local.supervisor.services import start_services, use_ray_client_env

    settings = load_settings()
    use_ray_client_env(settings)  # before Ray is imported: token auth and loopback for this process
    start_services(settings)
    with following_runs(console) as on_update:
        result = start_retraining(settings, model, reason, trigger=names.TRIGGER_MANUAL,
                                  on_started=lambda name: console.print(f"started {name}"), on_update=on_update)
    console.print(f"{result.workflow}: {result.phase} {result.message}".rstrip(), markup=False)
    if result.phase != "Succeeded":
        raise typer.Exit(1)


def _run_locally(model: str) -> None:
    from ferry.local import reconcile
    from ferry.local.supervisor.services import use_ray_client_env

    settings = load_settings()
    use_ray_client_env(settings)
    with following_runs(console) as on_update:
        result = reconcile.up(settings, [model], on_update=on_update)
    console.print(outcomes_table(result))
    if any(m.action == "up-to-date" for m in result.models):
        err_console.print("a version with this spec hash is registered: use --retrain to train again")
    if not result.ok:
        raise typer.Exit(1)
