"""Run a script that starts its own local Ray in a child process and read back the one result it prints.

Integration tests that need a private Ray (`ray.init(address="local")`, never the session's) run it this
way, so its workers and shutdown never touch the test process. The script prints one line `RESULT<json>`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULT = "RESULT"


def run_ray_script(script: str, tmp_path: Path, timeout_s: float = 540) -> Any:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)  # a private local Ray, never one the environment points at
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    line = next((row for row in done.stdout.splitlines() if row.startswith(RESULT)), None)
    assert line, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(line.removeprefix(RESULT))
