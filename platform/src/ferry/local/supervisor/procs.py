"""Process and port helpers for what local mode starts: identity, process trees, loopback ports.

Why /proc: a recorded pid alone is not an identity (pids are reused), so every record also keeps the
process start time (field 22 of /proc/<pid>/stat) and a pid only counts as "ours" while both match.
Ray's workers leave our process group (each gets its own) but stay in our session, and Ray job drivers
start their own sessions under a worker, so stopping a service means: the session it was started in
plus every descendant, snapshotted before the first signal. Zombies count as dead: they hold no port
and cannot be signalled, and some container init processes never reap them.
Off Linux (no /proc) the helpers fall back to `os.kill(pid, 0)` and the process group.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

from ferry.adapters.tls import tls_context
from ferry.contract.urls import is_loopback_url

PROC = Path("/proc")
LISTEN_STATE = "0A"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the parenthesised command name, which may hold spaces)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    return text[text.rfind(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot: with the pid, an identity that survives reuse."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int | None, ticks: int | None = None) -> bool:
    """True while `pid` runs (not a zombie) and, when `ticks` is given, is the same process as recorded."""
    if not pid or pid <= 0:
        return False
    if not PROC.is_dir():
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return ticks is None or int(fields[19]) == ticks


def reap(pid: int) -> None:
    """Collect the exit status when the process is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _all_pids() -> list[int]:
    if not PROC.is_dir():
        return []
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is `sid` (a service started with start_new_session has sid == pid)."""
    result = []
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields and fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            result.append(pid)
    return result


def descendants(root: int) -> list[int]:
    """Live descendants of `root`, found by walking parent pids."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_tree(leader: int) -> dict[int, int | None]:
    """pid → start ticks of everything a service started: its session plus descendants of any of them."""
    pids = set(session_members(leader)) | {leader}
    for pid in list(pids):
        pids.update(descendants(pid))
    return {pid: start_ticks(pid) for pid in pids if is_alive(pid)}


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll `predicate` until it holds or `timeout_s` passes; every wait in local mode is bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def terminate_tree(leader: int, ticks: int | None, *, leader_first: bool, grace_s: float,
                   kill_s: float = 10.0) -> list[int]:
    """Stop a service and everything it started; returns the pids that needed SIGKILL.

    `leader_first` sends SIGTERM to the leader only (`ray start --block` then shuts its own processes
    down in order); otherwise the whole process group gets it. Survivors get SIGKILL after `grace_s`.
    """
    current = start_ticks(leader)
    if ticks is not None and current is not None and current != ticks:
        # Linux never reuses a pid that still names a session, so our session is gone entirely.
        return []
    tree = process_tree(leader) if is_alive(leader, ticks) else {}
    tree.update({pid: start_ticks(pid) for pid in session_members(leader)})
    if leader not in tree:  # the leader died on its own: what it left behind gets SIGTERM directly
        for pid in tree:
            _signal(pid, signal.SIGTERM)
    elif leader_first:
        _signal(leader, signal.SIGTERM)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader, signal.SIGTERM)

    def survivors() -> list[int]:
        reap(leader)
        return [pid for pid, t in tree.items() if is_alive(pid, t)]

    wait_until(lambda: not survivors(), grace_s)
    stubborn = survivors()
    for pid in stubborn:
        _signal(pid, signal.SIGKILL)
    wait_until(lambda: not survivors(), kill_s)
    return stubborn


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether we could bind host:port now. SO_REUSEADDR ignores sockets in TIME_WAIT but not listeners."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# Chosen ports come from below Ray Serve's replica ports (30000-31000 for HTTP, where each replica of every
# head on the machine takes the first it can bind) and Linux's ephemeral range (32768-60999), and above Ray's
# worker ports (10002-19999): a port the kernel handed out as free can otherwise be taken, before our server
# binds it, as the source port of any outgoing connection, by a Ray worker or by a replica (CI failed once so:
# Serve's proxy could not bind a port chosen a minute before).
FREE_PORT_RANGE = (20000, 29999)
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def _bindable(port: int, host: str) -> bool:
    """Stricter than `port_free` (no SO_REUSEADDR): a port still in TIME_WAIT is not handed out either, as the
    kernel's own choice never was, for servers that bind without SO_REUSEADDR."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", tries: int = 200) -> int:
    """A port in FREE_PORT_RANGE that binds now and that this process has not handed out before
    (tests and optional side ports; a race with another process choosing the same port is accepted)."""
    low, high = FREE_PORT_RANGE
    with _handed_out_lock:
        for _ in range(tries):
            port = random.randint(low, high)  # noqa: S311 - spreading test ports, not a secret
            if port not in _handed_out and _bindable(port, host):
                _handed_out.add(port)
                return port
    raise OSError(f"no free port on {host} in {low}-{high} after {tries} tries")


def http_ok(url: str, headers: dict[str, str] | None = None, timeout_s: float = 2.0) -> bool:
    """GET `url` and report a 2xx. A proxy from the environment must not see loopback; it may be how a remote
    server (an MLflow that MLFLOW_TRACKING_URI names) is reached."""
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s, trust_env=not is_loopback_url(url),
                             verify=tls_context())
    except httpx.HTTPError:
        return False
    return response.is_success


def redis_ok(host: str, port: int, password: str, timeout_s: float = 2.0) -> bool:
    """AUTH and PING a Redis over RESP: only a server that knows our password answers +OK, +PONG."""
    request = f"*2\r\n$4\r\nAUTH\r\n${len(password.encode())}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n".encode()
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(request)
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return reply.startswith(b"+OK\r\n+PONG\r\n")


def _decode_address(hex_addr: str) -> str:
    """/proc/net/tcp{,6} print addresses as host-order 32-bit words in hex."""
    raw = bytes.fromhex(hex_addr)
    swapped = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(swapped)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _socket_inodes(pids: Iterable[int]) -> dict[str, int]:
    inodes: dict[str, int] = {}
    for pid in pids:
        fd_dir = PROC / str(pid) / "fd"
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
    return inodes


def process_title(pid: int | None) -> str:
    """A process's first command-line word (the title Ray gives its workers); "" once it is gone."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def listening_sockets(pids: Iterable[int] | None = None) -> list[tuple[str, int, int | None]]:
    """(address, port, pid) of TCP listeners; only those owned by `pids` when given (pid None if unknown)."""
    owners = _socket_inodes(pids if pids is not None else _all_pids())
    result = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] != LISTEN_STATE:
                    continue
                if pids is not None and cols[9] not in owners:
                    continue
                addr, port = cols[1].split(":")
                result.append((_decode_address(addr), int(port, 16), owners.get(cols[9])))
    return result
