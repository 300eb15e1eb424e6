"""The Argo Server options that `ferry runs|logs|submit` share, and the connection they open.

With `--argo-server` (or FERRY_ARGO_SERVER) those verbs talk to that cluster's Argo Server; without it
they work on the local runs under .ferry/. Either way the output is the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ferry.cli.output import err_console

if TYPE_CHECKING:
    from ferry.adapters.argo_server import ArgoServer

ArgoServerOption = Annotated[str | None, typer.Option(
    "--argo-server", envvar="FERRY_ARGO_SERVER", show_envvar=True, rich_help_panel="Cluster",
    help="Argo Server URL (e.g. https://argo.example.com or http://127.0.0.1:2746 through a port-forward). "
         "The token is read from FERRY_ARGO_TOKEN or ARGO_TOKEN; without a URL, local runs are used.")]
NamespaceOption = Annotated[str | None, typer.Option(
    "--namespace", "-n", envvar="FERRY_ARGO_NAMESPACE", show_envvar=True, rich_help_panel="Cluster",
    help="Namespace of the pipeline runs on the cluster (default: ferry).")]


def connect(url: str, namespace: str | None) -> ArgoServer:
    try:
        from ferry.adapters.argo_server import ArgoServer, ArgoTarget
    except ModuleNotFoundError as exc:  # the argo-workflows SDK is an extra: local mode does not need it
        err_console.print(f"[red]error[/red] --argo-server needs the Argo Workflows SDK ({exc.name}): "
                          "pip install 'ferry[cluster]'")
        raise typer.Exit(2) from None
    return ArgoServer(ArgoTarget.from_env(url, namespace))
