"""`pip install ARGS` into the Python that runs this, through uv when uv sits next to it (./task installs it with
go-task), byte-compiling nothing (`task setup` runs compileall on all cores afterwards).

Why uv: on the CI machine (2 cores, empty caches) uv installs ferry[ml,dev], ~170 packages, in about 7 s where pip
takes about 48 s, most of it pip unpacking on one core. uv does not read pip's configuration, so the settings pip
would use (pip.conf and PIP_* variables, as `pip config list` shows them: an internal index, a folder of wheels, a
constraints file, a CA bundle) are passed on, and every index is searched for the best version as pip does
(`--index-strategy unsafe-best-match`; uv's default takes the first index that has the package). Without uv, or
when uv fails, pip installs as before.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

# pip's setting -> uv's option, for the settings that change what gets installed from where.
REPEATED_OPTIONS = {"extra-index-url": "--extra-index-url", "find-links": "--find-links", "constraint": "--constraint"}
SINGLE_OPTIONS = {"index-url": "--index-url"}


def pip_settings() -> dict[str, list[str]]:
    """pip's effective settings by name (`global.find-links` and `:env:.find-links` are both `find-links`);
    the environment's (PIP_*) win over the files'. A value may hold several entries."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            check=False).stdout
    from_files: dict[str, list[str]] = {}
    from_env: dict[str, list[str]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        found = from_env if key.startswith(":env:") else from_files
        found[key.rsplit(".", 1)[-1]] = shlex.split(value.strip().strip("'\"").replace("\\n", " "))
    return from_files | from_env


def uv_command(uv: Path, requirements: list[str]) -> tuple[list[str], dict[str, str]]:
    settings = pip_settings()
    command = [str(uv), "pip", "install", "-q", "--python", sys.executable, "--index-strategy", "unsafe-best-match"]
    for name, option in {**REPEATED_OPTIONS, **SINGLE_OPTIONS}.items():
        for value in settings.get(name, [])[: 1 if name in SINGLE_OPTIONS else None]:
            command += [option, value]
    env = dict(os.environ)
    if settings.get("cert"):
        env["SSL_CERT_FILE"] = settings["cert"][0]
    return command + requirements, env


def main(requirements: list[str]) -> int:
    uv = Path(sys.executable).parent / "uv"
    if uv.exists():
        command, env = uv_command(uv, requirements)
        if subprocess.run(command, env=env, check=False).returncode == 0:
            return 0
        print("uv could not install the packages (above); installing them with pip", file=sys.stderr)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-compile", *requirements]
    return subprocess.run(pip, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
