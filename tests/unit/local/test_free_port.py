"""free_port: ports that outgoing connections and Ray's workers never take, never the same one twice."""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

import pytest
from tests.support.ports import range_for, worker_slice, xdist_worker

from ferry.local.supervisor import procs

FULL_RANGE = (20000, 29999)  # procs.FREE_PORT_RANGE before tests/conftest.py gave this process its share


def test_ports_are_outside_the_ephemeral_ray_worker_and_serve_replica_ranges_and_distinct() -> None:
    from ray.serve._private import constants as serve

    ports = [procs.free_port() for _ in range(50)]
    low, high = procs.FREE_PORT_RANGE
    assert all(low <= port <= high for port in ports)
    assert len(set(ports)) == len(ports)
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert high < ephemeral_low and high < serve.RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT


def test_a_port_someone_listens_on_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        monkeypatch.setattr(procs, "FREE_PORT_RANGE", (taken, taken))
        with pytest.raises(OSError, match="no free port"):
            procs.free_port(tries=5)


def test_each_test_worker_has_ports_of_its_own(request: pytest.FixtureRequest) -> None:
    slices = [worker_slice(FULL_RANGE, index, 3) for index in range(3)]
    assert slices[0][0] == FULL_RANGE[0] and slices[-1][1] <= FULL_RANGE[1]
    assert all(a[1] < b[0] and b[1] - b[0] > 1000 for a, b in itertools.pairwise(slices))
    # tests/conftest.py set this process' range: its run's share (tests/run_all.sh), then its xdist worker's slice
    assert range_for(FULL_RANGE, os.environ.get("TESTS_PORT_SHARE"), xdist_worker(request.config)) == \
        procs.FREE_PORT_RANGE
    assert range_for(FULL_RANGE, "1/2", (0, 3)) == worker_slice((25000, 29999), 0, 3)
    assert range_for(FULL_RANGE, None, None) == FULL_RANGE
