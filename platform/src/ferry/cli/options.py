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

# The environment of the cluster verbs, for the CLI reference (ferry.cli.docs). The adapter reads them; this copy
# keeps the docs generator free of the SDK, and tests/unit/test_cli_cluster.py keeps the two equal.
CLUSTER_ENVIRONMENT = {
    "FERRY_ARGO_SERVER": "Argo Server URL for `ferry runs|logs|submit` (same as --argo-server).",
    "FERRY_ARGO_NAMESPACE": "Namespace of the pipeline runs on the cluster (default: ferry).",
    "FERRY_ARGO_TOKEN": "Bearer token for the Argo Server, e.g. `kubectl -n ferry create token ferry-operator`. "
                        "Read at each call, never stored.",
    "ARGO_TOKEN": "Used when FERRY_ARGO_TOKEN is not set, as the Argo CLI does.",
    "FERRY_ARGO_INSECURE_SKIP_VERIFY": "`1` to accept a self-signed certificate of the Argo Server.",
}

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
