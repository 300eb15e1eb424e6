"""`ferry image tag`: the ferry image's immutable tag for this checkout (ferry.adapters.image_build).

.github/workflows/image.yml tags and pushes the image with it (never twice), and `ferry generate` renders the
prod manifests with it, so the manifests in Git name exactly the code they run.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ferry.adapters import image_build
from ferry.render.profiles import ImageVariant
from ferry.settings import load_settings

image_app = typer.Typer(help="The ferry image's tag, as image.yml pushes it and the prod manifests name it.",
                        no_args_is_help=True)


@image_app.command()
def tag(
    variant: Annotated[ImageVariant, typer.Option(
        help="Which build: cpu (steps, heads, serving) or cuda (GPU workers; the tag ends in -cuda).")] = "cpu",
    inputs: Annotated[bool, typer.Option(
        "--inputs", help="Print the files the tag is a hash of instead, one a line.")] = False,
) -> None:
    """Print `<version>-<hash of the image's build inputs>`: changes with any file the Dockerfile copies."""
    home = load_settings().home
    if inputs:
        typer.echo("\n".join(image_build.build_inputs(home)))
        return
    typer.echo(image_build.variant_tag(home, variant))  # plain: CI reads it into a step output
