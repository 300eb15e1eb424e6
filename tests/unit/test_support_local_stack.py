"""tests/support/local_stack.serve_errors: the replicas' error records, tracebacks included, for a failed assertion."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.local_stack import serve_errors

from ferry.local.supervisor.service_defs import ray_temp_dir
from ferry.settings import Settings


def test_serve_errors_keeps_error_records_with_their_tracebacks_and_nothing_else(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    logs = ray_temp_dir(settings) / "session_latest" / "logs" / "serve"
    try:
        assert serve_errors(settings) == "(no error in the Serve replicas' logs)"  # no session yet
        logs.mkdir(parents=True)
        (logs / "replica_m_router_x.log").write_text(
            "INFO 2026-12-06 10:00:00,001 m_router x -- POST /m/predict 200 2.0ms\n"
            "ERROR 2026-12-06 10:00:01,002 m_router x -- unexpected error while scoring\n"
            "Traceback (most recent call last):\n  File \"service.py\", line 1\nValueError: boom\n"
            "INFO 2026-12-06 10:00:02,003 m_router x -- POST /m/predict 200 1.9ms\n")
        (logs / "controller_1.log").write_text("ERROR 2026-12-06 10:00:00,000 controller -- not a replica\n")
        assert serve_errors(settings).splitlines() == [
            "replica_m_router_x.log: ERROR 2026-12-06 10:00:01,002 m_router x -- unexpected error while scoring",
            "replica_m_router_x.log: Traceback (most recent call last):",
            'replica_m_router_x.log:   File "service.py", line 1',
            "replica_m_router_x.log: ValueError: boom"]
    finally:
        shutil.rmtree(ray_temp_dir(settings), ignore_errors=True)
