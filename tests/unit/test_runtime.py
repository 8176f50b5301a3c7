"""orchestrator/runtime.py without Ray: fail-fast capacity arithmetic (bundles cannot split
across nodes; autoscaler pools from a cluster YAML count up to their max_workers) and the
shared-storage rule."""

from __future__ import annotations

import pytest

from orchestrator import runtime
from orchestrator.errors import InsufficientResourcesError
from orchestrator.runtime import capacity, check_fits

TWO_CPU = [{"CPU": 2.0, "memory": 1e9}]


def test_bundle_must_fit_one_node():
    assert capacity({"CPU": 3}, TWO_CPU + TWO_CPU) == 0
    assert capacity({"CPU": 1}, TWO_CPU + TWO_CPU) == 4


def test_gpus_on_a_cpu_cluster_fail_fast_with_names():
    with pytest.raises(InsufficientResourcesError) as info:
        check_fits(2, {"CPU": 1, "GPU": 1}, nodes=TWO_CPU)
    msg = str(info.value)
    assert "GPU=1" in msg and "2 worker(s)" in msg and "gpus_per_worker" in msg


def test_cluster_yaml_pools_are_counted():
    # cluster/gpu.yaml has GPU pools: a 4-GPU request fits once the autoscaler grows.
    check_fits(4, {"CPU": 1, "GPU": 1}, cluster_yaml="cluster/gpu.yaml", nodes=TWO_CPU)
    with pytest.raises(InsufficientResourcesError, match="cluster/gpu.yaml"):
        check_fits(1, {"CPU": 1, "GPU": 64}, cluster_yaml="cluster/gpu.yaml", nodes=TWO_CPU)


def test_shared_storage_rule():
    problem = runtime.shared_storage_problem
    assert problem("s3://bucket/runs", alive_nodes=5) is None
    assert problem("gs://bucket/runs", alive_nodes=1, needs_new_nodes=True) is None
    assert problem("/home/me/runs", alive_nodes=1, fstype="ext4") is None  # one node: fine
    msg = problem("/home/me/runs", alive_nodes=3, fstype="ext4")
    assert msg and "the cluster has 3 nodes" in msg and "s3://" in msg and "NFS" in msg
    assert problem("/mnt/shared/runs", alive_nodes=3, fstype="nfs4") is None
    assert problem("/home/me/runs", alive_nodes=1, needs_new_nodes=True, fstype="xfs")
    assert problem("file:///home/me/runs", alive_nodes=2, fstype="ext4")


def test_require_shared_storage_raises_on_multi_node(monkeypatch):
    import sys
    import types

    nodes = [
        {"Alive": True, "Resources": {"CPU": 8}},
        {"Alive": True, "Resources": {"CPU": 8, "GPU": 1}},
    ]
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(nodes=lambda: nodes))
    monkeypatch.setattr(runtime, "_fstype", lambda path: "ext4")
    with pytest.raises(runtime.SharedStorageError, match="use shared storage|Use shared storage"):
        runtime.require_shared_storage("/tmp/runs", {"CPU": 1})
    runtime.require_shared_storage("s3://b/runs", {"CPU": 1})
    nodes[:] = nodes[:1]
    runtime.require_shared_storage("/tmp/runs", {"CPU": 1})  # one node, fits
    with pytest.raises(runtime.SharedStorageError, match="needs nodes the cluster has yet to add"):
        runtime.require_shared_storage("/tmp/runs", {"CPU": 1, "GPU": 1})


def test_sigterm_becomes_an_interrupt_that_says_so():
    import os
    import signal
    import time

    from orchestrator.runtime import Terminated, stop_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt) as info:  # `orch run`/`sweep` stop cleanly on it
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        assert isinstance(info.value, Terminated)
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_embedded_gcs_port_is_never_one_of_rays_own(monkeypatch):
    """The OS may hand out 52365 (Ray's dashboard-agent port) as a free port: the picker asks
    again rather than give Ray a port one of its own components will want."""
    import socket

    offered = iter([52365, 6379, 12000, 41234])

    class FakeSocket:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, addr):
            self.port = next(offered)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(socket, "socket", FakeSocket)
    assert runtime.free_port() == 41234


def test_leftovers_of_an_embedded_ray_are_ended_and_named():
    """runtime.end_leftovers: a process that outlives the grace is ended (and named); one that
    exits by itself in time is not touched."""
    import subprocess
    import sys
    import time

    import psutil

    from orchestrator import runtime

    lingering = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    procs = [psutil.Process(lingering.pid), psutil.Process(quick.pid)]
    try:
        t0 = time.monotonic()
        ended = runtime.end_leftovers(procs, grace_s=2.0)
        assert not procs[0].is_running() and not procs[1].is_running()
        assert len(ended) == 1 and ended[0].startswith("python")  # only the lingering one
        assert 2.0 <= time.monotonic() - t0 < 10  # it had its grace, then was ended
    finally:
        lingering.kill()
