"""A checkpoint when a run is stopped (orchestrator/worker/stop.py): the driver's SIGTERM asks,
the workers' Session answers at a step they agree on. Ray's key-value store is replaced by a
dict here; tests/integration/test_reliability.py does it through `orch stop` on a real head."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from orchestrator import runtime
from orchestrator.worker import session as session_mod
from orchestrator.worker import stop


class FakeKV:
    def __init__(self):
        self.data: dict[bytes, bytes] = {}

    def _internal_kv_initialized(self):
        return True

    def _internal_kv_put(self, key, value, overwrite=True, namespace=None):
        self.data[(namespace, key)] = value

    def _internal_kv_get(self, key, namespace=None):
        return self.data.get((namespace, key))

    def _internal_kv_exists(self, key, namespace=None):
        return (namespace, key) in self.data

    def _internal_kv_del(self, key, namespace=None):
        self.data.pop((namespace, key), None)


@pytest.fixture
def kv(monkeypatch):
    fake = FakeKV()
    monkeypatch.setattr(stop, "_kv", lambda: fake)
    return fake


def test_a_request_is_made_only_to_workers_that_listen(kv):
    assert stop.request("/runs/a") is False  # nobody said it would answer: stop at once
    stop.listen("/runs/a")
    assert stop.request("/runs/a") is True and stop.requested("/runs/a")
    assert not stop.requested("/runs/b")
    assert stop.confirmed("/runs/a") is None
    stop.confirm("/runs/a", 40)
    assert stop.confirmed("/runs/a") == 40
    stop.clear("/runs/a")  # a rerun in the same run dir starts with no request
    assert not stop.requested("/runs/a") and stop.confirmed("/runs/a") is None
    assert stop.request("/runs/a") is False


def test_the_session_checkpoints_at_the_next_poll_step_and_then_waits(kv, monkeypatch):
    sess = session_mod.Session(in_ray=True, run_dir="/runs/a", checkpoint_every=1000)
    assert not sess.should_checkpoint(1)  # first call: rank 0 says it listens
    assert kv._internal_kv_exists(stop._key("/runs/a", "listens"), namespace=stop.NAMESPACE)
    stop.request("/runs/a")
    asked = [s for s in range(2, 2 * stop.POLL_STEPS + 1) if sess.should_checkpoint(s)]
    assert asked == [stop.POLL_STEPS, 2 * stop.POLL_STEPS]  # only at poll steps
    assert sess.stopping
    saved = []
    monkeypatch.setattr(session_mod.ckpt, "save", lambda s, step, *a, **k: saved.append(step))

    class Ended(Exception):
        pass

    def sleep(_):  # the worker waits to be ended with the run: end it here
        raise Ended

    monkeypatch.setattr(session_mod.time, "sleep", sleep)
    with pytest.raises(Ended):
        sess.save_checkpoint(2 * stop.POLL_STEPS, {"loss": 0.1})
    assert saved == [2 * stop.POLL_STEPS]
    assert stop.confirmed("/runs/a") == 2 * stop.POLL_STEPS


def test_outside_ray_nothing_is_asked(kv):
    sess = session_mod.Session(in_ray=False, run_dir="/runs/a", checkpoint_every=1000)
    stop.listen("/runs/a")
    stop.request("/runs/a")
    assert not any(sess.should_checkpoint(s) for s in range(1, 3 * stop.POLL_STEPS))


def test_sigterm_waits_for_the_checkpoint_then_stops(kv, monkeypatch, capsys):
    before = signal.getsignal(signal.SIGTERM)
    stop.listen("/runs/a")

    def worker():  # what the workers do once asked
        while not stop.requested("/runs/a"):
            time.sleep(0.05)
        time.sleep(0.3)
        stop.confirm("/runs/a", 30)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        runtime.stop_on_sigterm()
        runtime.checkpoint_on_stop("/runs/a")
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        waited = time.monotonic() - t0
    finally:
        runtime.checkpoint_on_stop(None)
        signal.signal(signal.SIGTERM, before)
    out = capsys.readouterr().out
    assert "the workers save a checkpoint" in out and "checkpoint at step 30 saved" in out
    assert 0.25 < waited < 5
    assert runtime.got_sigterm()


def test_sigterm_without_listening_workers_stops_at_once(kv, capsys):
    before = signal.getsignal(signal.SIGTERM)
    try:
        runtime.stop_on_sigterm()
        runtime.checkpoint_on_stop("/runs/quiet")  # e.g. a torchrun script: never listens
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        assert time.monotonic() - t0 < 1
    finally:
        runtime.checkpoint_on_stop(None)
        signal.signal(signal.SIGTERM, before)
    assert "checkpoint" not in capsys.readouterr().out
