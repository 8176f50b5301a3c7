"""Progress lines while a run trains: the driver tails the run's metrics.jsonl and prints
each new row (the workers write it; orchestrator/rundir.py owns the file).

    step    120  epoch 1  loss 0.2310  accuracy 0.9410  samples/s 12,345  s/step 0.0103
    iter   12  env steps    12,000  mean return  143.2  max  500  eps 0.120  1,650 steps/s
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import rundir


def train_line(row: dict[str, Any]) -> str:
    """A Ray Train run's row: step, epoch, loss, accuracy, samples/s, step time."""
    parts = [f"step {row.get('step', '?'):>6}"]
    for key, fmt in (
        ("epoch", "{:d}"),
        ("loss", "{:.4f}"),
        ("accuracy", "{:.4f}"),
        ("samples_per_s", "{:,.0f}"),
        ("step_time_s", "{:.4f}"),
    ):
        if key in row and row[key] is not None:
            try:
                val = fmt.format(int(row[key]) if fmt == "{:d}" else row[key])
            except (ValueError, TypeError):
                val = str(row[key])
            label = {"samples_per_s": "samples/s", "step_time_s": "s/step"}.get(key, key)
            parts.append(f"{label} {val}")
    if row.get("checkpoint"):
        parts.append(f"[saved {Path(row['checkpoint']).name}]")
    return "  ".join(parts)


def rllib_line(row: dict[str, Any]) -> str:
    """An RLlib run's row (one per training iteration)."""
    ret = row.get("episode_return_mean")
    parts = [
        f"iter {row.get('iteration', 0):>4}",
        f"env steps {row.get('env_steps', 0):>8,}",
        f"mean return {'-' if ret is None else f'{ret:6.1f}':>6}",
    ]
    if row.get("episode_return_max") is not None:
        parts.append(f"max {row['episode_return_max']:4.0f}")
    parts.append(f"eps {row.get('epsilon', 0):.3f}")
    if row.get("env_steps_per_s"):
        parts.append(f"{row['env_steps_per_s']:,.0f} steps/s")
    if row.get("checkpoint"):
        parts.append(f"[saved {Path(row['checkpoint']).name}]")
    return "  ".join(parts)


class Tail(threading.Thread):
    """Prints the rows a run writes after it started (whole rows only: a torn line is skipped,
    as every reader of the metrics does), from a local metrics.jsonl or a bucket's chunks."""

    def __init__(
        self,
        run_dir: str,
        console,
        line: Callable[[dict[str, Any]], str],
        every: float = 0.5,
        run_id: str = "",
    ):
        super().__init__(daemon=True, name="orch-progress")
        self.run_dir, self.run_id, self.attempts = run_dir, run_id, 0
        self.rows = rundir.MetricsTail(run_dir)
        self.console, self.line = console, line
        # A bucket is listed every 2 s at most: one LIST per poll.
        self.every = max(every, 2.0) if rundir.is_uri(run_dir) else every
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.poll()
            self.stop_event.wait(self.every)
        self.poll()

    def poll(self) -> None:
        try:
            rows, restarted = self.rows.poll()
        except Exception:  # noqa: BLE001 - a storage hiccup: the next poll catches up
            return
        if restarted is not None and self.rows.delivered:
            self.console.print(
                f"[orch] metrics cut back to step {restarted}", highlight=False, markup=False
            )
        self._attempts()
        for row in rows:
            self.console.print(self.line(row), highlight=False)

    def _attempts(self) -> None:
        """A line for each restart of the worker group, with where its workers run."""
        if not self.run_id:
            return
        try:
            got = rundir.read_attempts(self.run_dir, self.run_id)
        except Exception:  # noqa: BLE001
            return
        for n, a in enumerate(got[self.attempts :], start=self.attempts + 1):
            nodes = ", ".join(
                sorted({str(w.get("node_id") or w.get("host"))[:12] for w in a.get("workers", [])})
            )
            if n > 1:
                self.console.print(
                    f"[orch] attempt {n} (restart {n - 1}): resumed from step "
                    f"{a.get('resumed_from_step')}; workers on node(s) {nodes}",
                    highlight=False,
                    markup=False,
                )
        self.attempts = max(self.attempts, len(got))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
