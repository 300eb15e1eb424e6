"""A step for the warm starter's tests: reports what a step process sees, or ends the way it is asked to."""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from pathlib import Path


def main() -> None:
    action, *rest = sys.argv[1:]
    if action == "report":
        import numpy as np

        print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ), "name": __name__,
                          "session_leader": os.getsid(0) == os.getpid(), "stdin": sys.stdin.read(),
                          "draw": float(np.random.random()),
                          "title": Path("/proc/self/cmdline").read_text().rstrip("\0")}))
        print("to stderr", file=sys.stderr)
    elif action == "exit":
        sys.exit(int(rest[0]))
    elif action == "raise":
        raise RuntimeError("boom from the step")
    elif action == "sleep":
        time.sleep(float(rest[0]))
    elif action == "shutdown":  # what a normal interpreter exit does: non-daemon threads joined, atexit run
        atexit.register(lambda: print("atexit ran", flush=True))
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished", flush=True))).start()


if __name__ == "__main__":
    main()
