"""A trial of a queued sweep waits for its workers in the queue (issue 22, item 7).

A sweep submitted through the queue (`orch submit --sweep --queue`, or a scheduled sweep whose
schedule names a queue) is one Ray job that holds nothing itself. Each trial, in its Tune actor,
asks the queue for its workers before it starts its Train run:

    with TrialLease(sweep_job_id, trial_name, workers, per_worker):
        trainer.fit()

The queue admits the trial by the rules every job follows (priority, first come first served,
gang admission, quotas), says in `orch queue` why it waits, and counts its workers while it
runs. The lease is held by a heartbeat thread; it ends when the block ends, when the trial
process dies (no beat for service.LEASE_TIMEOUT_S), or when its sweep stops.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.queue.service import LEASE_BEAT_S

SWEEP_ENV = "ORCH_QUEUE_SWEEP"  # set by the queue in a queued sweep's job: its id


class LeaseLostError(OrchestratorError):
    """The queue ended the trial's wait (its sweep is stopping, or was cancelled)."""


class TrialLease:
    def __init__(
        self,
        sweep_job: str,
        name: str,
        workers: int,
        per_worker: dict[str, float],
        *,
        actor=None,
        log=print,
        beat_s: float = LEASE_BEAT_S,
        poll_s: float = 1.0,
        say_every_s: float = 30.0,
    ):
        self.sweep_job, self.name = sweep_job, name
        self.workers, self.per_worker = int(workers), dict(per_worker)
        self.actor, self.log = actor, log
        # Waiting, it asks every poll_s (the queue passes once a second): a trial that fits
        # starts within a second or two. Admitted, it beats every beat_s.
        self.beat_s, self.poll_s, self.say_every_s = beat_s, min(poll_s, beat_s), say_every_s
        self.id = ""
        self.waited_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _call(self, method: str, *args: Any) -> Any:
        from orchestrator.queue import client

        if self.actor is None:
            self.actor = client.handle(create=False)
        return client.call(self.actor, method, *args)

    def __enter__(self) -> TrialLease:
        t0 = time.time()
        row = self._call("enqueue_trial", self.sweep_job, self.name, self.workers, self.per_worker)
        self.id = row["id"]
        said, last_why = 0.0, None
        while row["state"] in ("QUEUED", "HELD", "STARTING"):
            why = row.get("why") or ""
            if why and (why != last_why or time.time() - said > self.say_every_s):
                self.log(f"[orch] trial {self.name} waits in the queue: {why}")
                said, last_why = time.time(), why
            time.sleep(self.poll_s)
            row = self._call("trial_beat", self.id)
        if row["state"] != "RUNNING":
            raise LeaseLostError(
                f"the queue ended trial {self.name}'s wait ({row['state']}): "
                f"{row.get('message') or 'its sweep is stopping'}"
            )
        self.waited_s = time.time() - t0
        if self.waited_s > 2 * self.poll_s:
            self.log(f"[orch] trial {self.name} admitted by the queue after {self.waited_s:.0f} s")
        self._thread = threading.Thread(target=self._beat, name="orch-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                self._call("trial_beat", self.id)
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried; 60 s of them ends it
                self.log(f"[orch] trial {self.name}: queue heartbeat failed: {exc}")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.beat_s + 5)
        status = "SUCCEEDED" if exc_type is None else "FAILED"
        try:
            self._call("end_trial", self.id, status, "" if exc is None else str(exc)[-300:])
        except Exception as err:  # noqa: BLE001 - the lease ends by timeout anyway
            self.log(f"[orch] trial {self.name}: could not end its lease: {err}")
