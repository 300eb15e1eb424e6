"""docs/reference/cli.md and spec.md are generated from the code and document all of it; that the committed
pages are current is checked with every generated file (`ferry generate --check`, test_generated.py)."""

from __future__ import annotations

import typer

from ferry.cli import docs
from ferry.cli.app import app
from ferry.spec.models import ModelSpec


def test_cli_reference_covers_every_command_and_option() -> None:
    text = docs.cli_reference(app)
    root = typer.main.get_command(app)
    for path, command in docs._walk(root, ["ferry"]):
        assert f"## `{' '.join(path)}`" in text or path == ["ferry"]
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert f"`{param.opts[0]}`" in text, (path, param.opts)
    assert "`FERRY_ARGO_SERVER`" in text


def test_cli_reference_follows_the_code() -> None:
    """A new option shows up: the page is derived from the app, not written by hand."""
    extra = typer.Typer()

    @extra.command()
    def hello(loud: bool = typer.Option(False, help="Shout it.")) -> None:
        """Say hello."""

    @extra.command()
    def bye() -> None:
        """Say bye."""

    text = docs.cli_reference(extra)
    assert "## `ferry hello`" in text and "| `--loud` / `--no-loud` | bool |  | false |  | Shout it. |" in text


def _fields(model: type) -> set[str]:
    found: set[str] = set()
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        found.add(info.alias or name)
        annotation = info.annotation
        for arg in [annotation, *getattr(annotation, "__args__", ())]:
            if isinstance(arg, type) and hasattr(arg, "model_fields"):
                found |= _fields(arg)
    return found


def test_spec_reference_documents_every_field() -> None:
    text = docs.spec_reference()
    for field in _fields(ModelSpec):
        assert f"| `{field}` |" in text, field
