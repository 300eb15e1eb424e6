"""Where a test finds a command it runs: the project's own environment, never whatever PATH happens to hold.

:func:`venv_command` is a console script installed with ferry into the environment pytest runs in (ray,
mlflow, ferry, actionlint): the one beside ``sys.executable``, so tests run what ``.venv`` holds even when
``.venv/bin`` is not on PATH. :func:`system_command` is a Debian package's binary (promtool, amtool, node,
shellcheck, wrk), looked up on PATH. :func:`dev_module` is an optional Python package of the dev extra.

When a command is missing, the test fails under CI (the ``CI`` variable is set, as GitHub Actions and
``.ci/run`` do): a green CI must mean every test ran. Elsewhere it skips, naming the command that installs it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

# binary -> the Debian package that ships it: what .ci/install-debian-packages.sh installs.
DEBIAN_PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",  # Debian's name for the alertmanager binary
    "node": "nodejs",
    "shellcheck": "shellcheck",
    "wrk": "wrk",
    "redis-server": "redis-server",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(message: str) -> NoReturn:
    """Fail under CI, skip elsewhere: a missing tool must never turn CI green by skipping."""
    if in_ci():
        pytest.fail(f"{message} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(message)


def venv_bin() -> Path:
    # Not resolved: a venv's python is a symlink to the base interpreter, whose bin holds no ferry scripts.
    return Path(sys.executable).parent


def venv_command(name: str) -> str:
    """``name`` as installed beside this interpreter (``.venv/bin/<name>``)."""
    path = venv_bin() / name
    if not path.is_file():
        unavailable(f"{name} is not installed in {venv_bin()}: run `./task setup` "
                    "(pip install -e '.[ml,dev]' into .venv)")
    return str(path)


def system_command(name: str) -> str:
    """``name`` from a Debian package, on PATH."""
    found = shutil.which(name)
    if found is None:
        package = DEBIAN_PACKAGES[name]
        unavailable(f"{name} is not installed: `sudo apt-get install {package}` "
                    "(or `sudo bash .ci/install-debian-packages.sh`, which installs every test's packages)")
    return found



def dev_module(name: str) -> Any:
    """A module of the dev extra that only some tests need (lupa: a Lua runtime)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"the Python module {name} is not installed: run `./task setup` (the dev extra installs it)")
