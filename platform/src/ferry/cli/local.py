"""Local mode verbs: up, down, status; runs and logs (local, or a cluster's with --argo-server)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from ferry.cli.options import ArgoServerOption, NamespaceOption, connect
from ferry.cli.output import console, err_console, indented, raw
from ferry.cli.tables import following_runs, outcomes_table, replay_table, runs_table, services_table
from ferry.local.engine.progress import render_progress
from ferry.settings import load_settings


def up(
    models: Annotated[list[str] | None, typer.Argument(help="Only these models (default: every spec).")] = None,
    watch: Annotated[bool, typer.Option(help="Keep following new commits that touch gitops/models.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between checks with --watch.")] = 10.0,
    max_cycles: Annotated[int | None, typer.Option(help="Stop --watch after this many checks.")] = None,
) -> None:
    """Start Ray and MLflow (and Prometheus/Alertmanager if installed) on 127.0.0.1 and reconcile every spec."""
    from ferry.local import reconcile
    from ferry.local.supervisor.services import use_ray_client_env

    settings = load_settings()
    use_ray_client_env(settings)  # before Ray is imported: token auth and loopback for this process
    with following_runs(console) as on_update:
        result = reconcile.up(settings, models or (), on_update=on_update,
                              on_services=lambda s: console.print(services_table(s)),
                              deploy=lambda spec: _deploy(settings, spec),
                              start_serving=lambda spec: _start_serving(settings, spec),
                              on_wait=lambda line: console.print(line, markup=False, highlight=False))
    console.print(outcomes_table(result))
    _print_served(result)
    _print_urls(settings)
    if watch:
        console.print(f"watching {settings.home} for commits touching gitops/models (Ctrl-C to stop)")
        reconcile.watch(settings, interval, max_cycles, lambda head, res: _print_cycle(head, res))
    if not result.ok:
        raise typer.Exit(1)


def down() -> None:
    """Stop exactly the services that `ferry up` started."""
    from ferry.local.supervisor.services import stop_services

    console.print(services_table(stop_services(load_settings())))


def status() -> None:
    """Show the local services and their URLs."""
    from ferry.local.supervisor.services import service_status

    console.print(services_table(service_status(load_settings())))


def runs(
    action: Annotated[str | None, typer.Argument(help="`show` to show one run.")] = None,
    name: Annotated[str | None, typer.Argument(help="Workflow name for `runs show`.")] = None,
    model: Annotated[str | None, typer.Option(help="Only the runs of this model.")] = None,
    argo_server: ArgoServerOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """List pipeline runs, or `ferry runs show NAME` for one run's DAG (local, or a cluster's with --argo-server)."""
    if action not in (None, "show") or (action == "show" and not name):
        err_console.print("[red]error[/red] usage: ferry runs [--model MODEL] | ferry runs show NAME")
        raise typer.Exit(2)
    if argo_server:
        with connect(argo_server, namespace) as server:
            found = server.get_run(name) if name else server.list_runs(model)
    else:
        from ferry.local.engine.runner import list_runs, load_run

        settings = load_settings()
        found = load_run(settings, name) if name else [r for r in list_runs(settings) if model in (None, r["model"])]
    if found == []:
        console.print("no pipeline runs" + (f" of {model}" if model else "") + (" on this cluster" if argo_server
                      else " here yet: `ferry up` or `ferry submit MODEL` starts one"))
        return
    console.print(render_progress(found) if isinstance(found, dict) else runs_table(found))


def logs(
    name: Annotated[str, typer.Argument(help="Workflow name.")],
    step: Annotated[str, typer.Argument(help="Step (task) name, e.g. train.")],
    argo_server: ArgoServerOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Print the log of one step of a run (every attempt, in order)."""
    if argo_server:
        with connect(argo_server, namespace) as server:
            text = server.step_log(name, step)
        if not text:
            err_console.print(f"no log lines for {name}/{step}: the pods of succeeded steps are deleted by the "
                              "Workflow's podGC (OnPodSuccess); failed steps keep theirs")
    else:
        from ferry.local.engine.runner import node_log_path

        path = node_log_path(load_settings(), name, step)
        if not path.exists():
            err_console.print(f"[red]error[/red] no log for {name}/{step} at {path}")
            raise typer.Exit(1)
        text = path.read_text(errors="replace")
    raw(text, end="")


def replay(
    model: Annotated[str, typer.Argument(help="Model name (a spec in gitops/models), served by `ferry up`.")],
    param: Annotated[list[str] | None, typer.Option(
        help="KEY=VALUE: a data param for the simulator instead of the spec's (repeat it), e.g. a drift knob.")] = None,
    start: Annotated[str | None, typer.Option(help="First event time to send (ISO date); default: the first.")] = None,
    days: Annotated[float | None, typer.Option(help="Days of event time to send from --start.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000_000, help="Send at most this many transactions.")] = 100_000,
    rate: Annotated[float, typer.Option(min=1, max=100_000, help="Transactions per second, at most.")] = 2000.0,
    batch_rows: Annotated[int, typer.Option(min=1, max=1024, help="Transactions per request.")] = 256,
    timeout: Annotated[float, typer.Option(min=1, help="Stop after this many seconds.")] = 600.0,
) -> None:
    """Stream simulated raw transactions through MODEL's local endpoint in event-time order, each label after the
    label delay; for a ranking model (the recommender), its held-out ratings as requests and the clicks that follow
    (loopback only; bounded in count and time)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ferry.serving.replay import ReplayLimits, ReplayWindow
    from ferry.serving.replay_feedback import replay_served_model

    settings = load_settings()
    spec = _model_spec(settings, model)
    limits = ReplayLimits(batch_rows=batch_rows, rate_per_s=rate, limit=limit, timeout_s=timeout)
    columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("replay", total=None)
        report = replay_served_model(settings, spec, _params(param or []), ReplayWindow(start, days), limits,
                              on_start=lambda total: progress.update(task, total=total),
                              on_progress=lambda r: progress.update(task, completed=r.sent))
    console.print(replay_table(report))
    if report.failed:
        raise typer.Exit(1)


def _model_spec(settings: Any, model: str) -> Any:
    from ferry.local.reconcile import selected_spec

    return selected_spec(settings, model).model


def _params(pairs: list[str]) -> dict[str, Any]:
    import yaml

    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r}: use KEY=VALUE, e.g. --param n_customers=500", param_hint="--param")
        params[key.strip()] = yaml.safe_load(value)
    return params


def _deploy(settings: Any, spec: Any) -> Any:
    """Serve the model's champion and ask it once, so `ferry up` ends in a served prediction."""
    from ferry.local.reconcile import Served
    from ferry.serving.deploy import ServingError, ask_example, deploy_local

    try:
        url = deploy_local(settings, spec.model)
        path, answer = ask_example(settings, spec.model, url)
        return Served(spec.name, url, answer, path=path)
    except ServingError as exc:
        return Served(spec.name, "", error=str(exc))


def _start_serving(settings: Any, spec: Any) -> Any:
    """The model's router started as its run starts (`reconcile.up`); what withdraws it, or None if none started.
    A router that cannot start here is deployed after the run, which reports why it cannot."""
    from ferry.serving.deploy import start_local

    try:
        started = start_local(settings, spec.model)
    except Exception:  # Ray's own errors too: the deploy after the run reports them
        return None
    return (lambda: _withdraw(settings, spec)) if started else None


def _withdraw(settings: Any, spec: Any) -> None:
    from ferry.serving.deploy import ServingError, remove_local

    try:
        remove_local(settings, spec.name)
    except ServingError as exc:
        err_console.print(f"[red]could not withdraw {spec.name}'s router[/red]: {escape(str(exc))}")


def _print_served(result: Any) -> None:
    for served in result.served:
        if served.error:
            err_console.print(f"[red]serving {served.model} failed[/red]: {escape(served.error)}")
            continue
        console.print(f"serving {served.model}: POST {served.url}{served.path}", markup=False)
        console.print(indented(f"docs: {served.url}/docs", 2))
        console.print(indented(f"example prediction: {served.prediction}", 2))


def _print_urls(settings: Any) -> None:
    console.print(f"MLflow UI:      http://{settings.host}:{settings.mlflow_port}")
    console.print(f"Ray dashboard:  http://{settings.host}:{settings.ray_dashboard_port}")
    console.print(f"Prometheus:     http://{settings.host}:{settings.prometheus_port}")
    console.print(f"Ray Serve:      http://{settings.host}:{settings.serve_port}")
    console.print(f"Alert receiver: http://{settings.host}:{settings.receiver_port}  (metrics, `ferry alerts`)")


def _print_cycle(head: str, result: Any) -> None:
    if result is None:
        console.print(f"{head[:10]}: no model needs training")
    else:
        console.print(outcomes_table(result))
