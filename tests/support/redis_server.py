"""A real redis-server on loopback for the tests of the online feature state: a password, append-only
persistence in a temporary folder, a free port. It can be stopped and started again on the same folder, which
is how the tests prove that state survives a restart of the store."""

from __future__ import annotations

import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.local.supervisor import procs
from tests.support.binaries import system_command

HOST = "127.0.0.1"


@dataclass
class RedisServer:
    folder: Path
    port: int = field(default_factory=lambda: procs.free_port(HOST))
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [system_command("redis-server"), "--bind", HOST, "--port", str(self.port),
                "--requirepass", self.password, "--dir", str(self.folder), "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes", "--daemonize", "no",
                "--logfile", str(self.folder / "redis.log")]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except Exception:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on {HOST}:{self.port}; see {self.folder / 'redis.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis flushes the append-only file and exits
            self.process.wait(timeout=20)
        self.process = None

    def client(self, **options: Any) -> Any:
        import redis

        return redis.Redis(host=HOST, port=self.port, password=self.password, socket_timeout=2,
                           socket_connect_timeout=2, **options)
