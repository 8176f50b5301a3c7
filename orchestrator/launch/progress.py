"""Progress while a run trains: the driver tails the run's metrics.jsonl (the workers write it;
orchestrator/rundir.py owns the file) and shows each new row.

On a terminal: a rich progress bar, with the position against the total (when the run knows
it up front), the rate, the ETA and the latest metrics beside it; checkpoints, restarts and
cut-backs print above it. Anywhere else (a log file, a pipe, `ray job logs`): exactly one
unwrapped line per row, whatever the width, with the same figures as text:

    step    120/1875   6%  epoch 0  loss 0.2310  accuracy -  samples/s 12,346  s/step 0.0103  10.0 steps/s  ETA 2m56s
    iter   12  env steps   12,000/200,000  mean return  143.2  max  500  eps 0.120  1,650 steps/s  ETA <=1m53s

A metric the run has not measured yet shows `-` (accuracy before the first evaluation): the
workloads leave such a metric out of their rows rather than writing a 0.0 that never
happened. Which metrics to expect and the total come from the workers
(`Session.set_progress`, in the record of each start of the worker group) or, for RLlib
runs, from the driver (`Format.total`: stop_env_steps, a limit the run may stop before).
The rate is steps per second of wall time between rows of the current attempt.
"""  # noqa: E501

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import rundir

MISSING = "-"  # a metric not measured yet

# Shown in this order when present (or expected); `fmt` applies to numbers.
TRAIN_METRICS: tuple[tuple[str, str], ...] = (("loss", "{:.4f}"), ("accuracy", "{:.4f}"))
TRAIN_PERF: tuple[tuple[str, str, str], ...] = (
    ("samples_per_s", "samples/s", "{:,.0f}"),
    ("step_time_s", "s/step", "{:.4f}"),
)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _value(v: Any, fmt: str = "") -> str:
    """A metric as text: `-` when absent (None), `nan` when measured as NaN."""
    if v is None:
        return MISSING
    if not _is_number(v):
        return str(v)
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if fmt:
        try:
            return fmt.format(v)
        except (ValueError, TypeError):
            return str(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    return f"{v:,.1f}" if abs(v) >= 10_000 else f"{v:.4f}"


def train_parts(row: dict[str, Any], expect: Sequence[str] = ()) -> list[str]:
    """A Ray Train row's metrics as `label value` parts: epoch, loss and accuracy (when the
    row has them), every expected metric (`-` while it is not measured), then samples/s and
    step time."""
    parts = []
    if _is_number(row.get("epoch")):
        parts.append(f"epoch {int(row['epoch'])}")
    fmts = dict(TRAIN_METRICS)
    keys = [k for k, _ in TRAIN_METRICS if row.get(k) is not None]
    keys += [k for k in expect if k not in keys]
    for k in keys:
        parts.append(f"{k} {_value(row.get(k), fmts.get(k, ''))}")
    for key, label, fmt in TRAIN_PERF:
        if row.get(key) is not None:
            parts.append(f"{label} {_value(row[key], fmt)}")
    return parts


def saved(row: dict[str, Any]) -> list[str]:
    """`[saved checkpoint_000100]` when the row saved a checkpoint."""
    return [f"[saved {Path(str(row['checkpoint'])).name}]"] if row.get("checkpoint") else []


def train_line(row: dict[str, Any], expect: Sequence[str] = ()) -> str:
    """A Ray Train run's row: step, epoch, loss, accuracy, samples/s, step time."""
    return "  ".join([f"step {row.get('step', '?'):>6}", *train_parts(row, expect), *saved(row)])


def rllib_parts(row: dict[str, Any], total: int | None = None) -> list[str]:
    """An RLlib run's row (one per training iteration); `total` env steps, when known."""
    ret = row.get("episode_return_mean")
    steps = f"{row.get('env_steps', 0):>8,}"
    if total:
        steps += f"/{total:,}"
    parts = [
        f"iter {row.get('iteration', 0):>4}",
        f"env steps {steps}",
        f"mean return {'-' if ret is None else f'{ret:6.1f}':>6}",
    ]
    if row.get("episode_return_max") is not None:
        parts.append(f"max {row['episode_return_max']:4.0f}")
    parts.append(f"eps {row.get('epsilon', 0):.3f}")
    if row.get("greedy_return_mean") is not None:  # a greedy evaluation ran this iteration
        parts.append(f"greedy {row['greedy_return_mean']:.1f}/{row.get('greedy_episodes', '?')}")
    if row.get("env_steps_per_s"):
        parts.append(f"{row['env_steps_per_s']:,.0f} steps/s")
    return parts


def rllib_line(row: dict[str, Any]) -> str:
    """An RLlib run's row (one per training iteration)."""
    return "  ".join([*rllib_parts(row), *saved(row)])


def duration(seconds: float) -> str:
    """`45s`, `3m01s`, `2h05m`, `3d04h`."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def rate_text(rate: float | None, unit: str = "step") -> str:
    """`9.7 steps/s`, or `1.23 s/step` below one per second; `-` before it is known."""
    if not rate or rate <= 0 or math.isnan(rate):
        return f"- {unit}s/s"
    if rate >= 1:
        return f"{rate:,.1f} {unit}s/s"
    return f"{1 / rate:,.2f} s/{unit}"


@dataclass
class Format:
    """How a kind of run is shown: `kind` train or rllib; `total` what `step` counts up to
    when the driver knows it up front (the workers may tell it otherwise); `bound`: the run
    may stop before the total (an RLlib stop_return), so the ETA is an upper bound.
    Called with a row, it is that row's line without position, rate or ETA."""

    kind: str = "train"
    total: int | None = None
    bound: bool = False
    unit: str = "step"
    fn: Callable[[dict[str, Any]], str] | None = None  # any other line function

    def __call__(self, row: dict[str, Any]) -> str:
        if self.fn is not None:
            return self.fn(row)
        return rllib_line(row) if self.kind == "rllib" else train_line(row)

    @classmethod
    def of(cls, line: Any) -> Format:
        if isinstance(line, Format):
            return line
        if line is rllib_line:
            return cls("rllib")
        if line is train_line or line is None:
            return cls("train")
        return cls("custom", fn=line)


def rllib_format(plan) -> Format:
    """An RLlib run: its env-step limit (`train.stop_env_steps`) as the total, when the
    workload's Args has one; the run may stop sooner (a mean return reached, a time limit)."""
    total = None
    try:
        from orchestrator.spec import import_workload

        args = import_workload(plan.workload).Args.model_validate(plan.worker.train)
        total = getattr(args, "stop_env_steps", None)
    except Exception:  # noqa: BLE001 - a workload without Args: no total, the rest as usual
        pass
    return Format("rllib", total=int(total) if total else None, bound=True, unit="env step")


@dataclass
class Tracker:
    """Where the run is: its step, the total, the rate since the first row of this attempt,
    the metrics the workers said to expect."""

    total: int | None = None
    bound: bool = False
    expect: tuple[str, ...] = ()
    step: float | None = None
    rate: float | None = None
    origin: tuple[float, float] | None = None  # (time, step) of the attempt's first row

    def restart(self) -> None:
        """A new attempt (or a cut back to a checkpoint): the rate counts from its first row."""
        self.origin, self.rate = None, None

    def add(self, row: dict[str, Any], now: float | None = None) -> None:
        step = row.get("step")
        if not _is_number(step):
            return
        t = row.get("time")
        t = float(t) if _is_number(t) else (now if now is not None else time.time())
        if self.origin is None or step < self.origin[1]:
            self.origin, self.rate = (t, float(step)), None
        elif t > self.origin[0] and step > self.origin[1]:
            self.rate = (step - self.origin[1]) / (t - self.origin[0])
        self.step = float(step)

    @property
    def eta_s(self) -> float | None:
        if not self.total or self.step is None:
            return None
        left = max(0.0, self.total - self.step)
        if left == 0:
            return 0.0
        return left / self.rate if self.rate else None

    def eta_text(self) -> str:
        """`ETA 3m01s`; `ETA <=1m52s` for a limit the run may stop before; `ETA -` before
        the rate is known; empty without a total."""
        if not self.total:
            return ""
        eta = self.eta_s
        if eta is None:
            return f"ETA {MISSING}"
        return f"ETA {'<=' if self.bound else ''}{duration(eta)}"

    def position(self, step: Any = None) -> str:
        """`   120/1875   6%` against the total, else the step alone (default: the latest)."""
        step = self.step if step is None else step
        if not _is_number(step):
            return f"{'?':>6}"
        step = int(step)
        if not self.total:
            return f"{step:>6}"
        pct = min(100.0, 100.0 * step / self.total)
        return f"{step:>6}/{self.total} {pct:3.0f}%"


# -- views ------------------------------------------------------------------------------------


class LineView:
    """Not a terminal: one line per row, printed without wrapping (soft_wrap), so a log, a
    pipe or `ray job logs` gets exactly one line each, whatever its width."""

    def __init__(self, console, fmt: Format, tracker: Tracker):
        self.console, self.fmt, self.tracker = console, fmt, tracker

    def text(self, row: dict[str, Any]) -> str:
        tr = self.tracker
        if self.fmt.kind == "rllib":
            parts = rllib_parts(row, tr.total)
        elif self.fmt.kind == "train":
            parts = [f"step {tr.position(row.get('step'))}", *train_parts(row, tr.expect)]
        else:
            parts = [self.fmt(row)]
        if not (self.fmt.kind == "rllib" and row.get("env_steps_per_s")):  # its own rate
            parts.append(rate_text(tr.rate, self.fmt.unit))
        if tr.eta_text():
            parts.append(tr.eta_text())
        if self.fmt.kind != "custom":
            parts += saved(row)
        return "  ".join(parts)

    def row(self, row: dict[str, Any]) -> None:
        self.console.print(self.text(row), soft_wrap=True, highlight=False, markup=False)

    def note(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False, markup=False)

    def close(self) -> None:
        pass


class BarView:
    """A terminal: a rich progress bar (position/total, rate, ETA, latest metrics beside
    it); checkpoints and notes print above it. Started at the first row."""

    def __init__(self, console, fmt: Format, tracker: Tracker):
        self.console, self.fmt, self.tracker = console, fmt, tracker
        self.progress = None
        self.task = None

    def _start(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        from rich.table import Column

        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[pct]}", markup=False),
            TextColumn("{task.fields[rate]}", markup=False),
            TextColumn("{task.fields[eta]}", markup=False),
            TextColumn(
                "{task.fields[metrics]}",
                markup=False,
                table_column=Column(no_wrap=True, overflow="ellipsis"),
            ),
            console=self.console,
            transient=False,
            refresh_per_second=4,
        )
        self.task = self.progress.add_task(
            "env steps" if self.fmt.kind == "rllib" else "step",
            total=self.tracker.total,
            pct="",
            rate="",
            eta="",
            metrics="",
        )

    def metrics_text(self, row: dict[str, Any]) -> str:
        if self.fmt.kind == "rllib":
            return "  ".join(p for p in rllib_parts(row) if not p.startswith("env steps"))
        if self.fmt.kind == "train":
            return "  ".join(train_parts(row, self.tracker.expect))
        return self.fmt(row)

    def row(self, row: dict[str, Any]) -> None:
        started = self.progress is not None
        if not started:
            self._start()
        tr = self.tracker
        step = tr.step if tr.step is not None else 0
        pct = f"{min(100.0, 100.0 * step / tr.total):3.0f}%" if tr.total else ""
        self.progress.update(
            self.task,
            completed=step,
            total=tr.total,
            pct=pct,
            rate=rate_text(tr.rate, self.fmt.unit),
            eta=tr.eta_text(),
            metrics=self.metrics_text(row),
        )
        if not started:
            self.progress.start()
        if row.get("checkpoint"):
            self.note(
                f"[orch] saved {Path(str(row['checkpoint'])).name} at step {int(step)}: "
                + self.metrics_text(row)
            )

    def note(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False, markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def view_for(console, fmt: Format, tracker: Tracker):
    """A bar on a terminal, one line per row anywhere else."""
    if getattr(console, "is_terminal", False) and not getattr(console, "is_dumb_terminal", False):
        return BarView(console, fmt, tracker)
    return LineView(console, fmt, tracker)


class Tail(threading.Thread):
    """Shows the rows a run writes after it started (whole rows only: a torn line is skipped,
    as every reader of the metrics does), from a local metrics.jsonl or a bucket's chunks."""

    def __init__(
        self,
        run_dir: str,
        console,
        line: Callable[[dict[str, Any]], str] | Format | None = None,
        every: float = 0.5,
        run_id: str = "",
    ):
        super().__init__(daemon=True, name="orch-progress")
        self.run_dir, self.run_id, self.attempts = run_dir, run_id, 0
        self.rows = rundir.MetricsTail(run_dir)
        self.console = console
        self.fmt = Format.of(line)
        self.line = self.fmt  # callable: a row's line (what older callers used)
        self.tracker = Tracker(total=self.fmt.total, bound=self.fmt.bound)
        self.view = view_for(console, self.fmt, self.tracker)
        # A bucket is listed every 2 s at most: one LIST per poll.
        self.every = max(every, 2.0) if rundir.is_uri(run_dir) else every
        self.stop_event = threading.Event()
        self.first_row_time: float | None = None  # the first row's own time (start-up)

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.poll()
                self.stop_event.wait(self.every)
            self.poll()
        finally:
            self.view.close()

    def poll(self) -> None:
        try:
            rows, restarted = self.rows.poll()
        except Exception:  # noqa: BLE001 - a storage hiccup: the next poll catches up
            return
        if restarted is not None and self.rows.delivered:
            self.tracker.restart()
            self.view.note(f"[orch] metrics cut back to step {restarted}")
        self._attempts()
        if rows and self.first_row_time is None and isinstance(rows[0].get("time"), (int, float)):
            self.first_row_time = float(rows[0]["time"])
        for row in rows:
            self.tracker.add(row)
            self.view.row(row)

    def _attempts(self) -> None:
        """A line for each restart of the worker group, with where its workers run; the
        total and the metrics to expect, as the workers recorded them."""
        if not self.run_id:
            return
        try:
            got = rundir.read_attempts(self.run_dir, self.run_id)
        except Exception:  # noqa: BLE001
            return
        for n, a in enumerate(got[self.attempts :], start=self.attempts + 1):
            if a.get("total_steps") and not self.fmt.total:
                self.tracker.total = int(a["total_steps"])
            if a.get("metrics"):
                self.tracker.expect = tuple(str(m) for m in a["metrics"])
            nodes = ", ".join(
                sorted({str(w.get("node_id") or w.get("host"))[:12] for w in a.get("workers", [])})
            )
            step, ckpt = a.get("resumed_from_step"), a.get("resumed_from")
            if n > 1:
                self.tracker.restart()
                self.view.note(
                    f"[orch] attempt {n} (restart {n - 1}): resumed from step {step}"
                    f"{f' ({ckpt})' if ckpt else ''}; workers on node(s) {nodes}"
                )
            elif ckpt and step is not None:
                # "checkpoint_000040 (torch)" -> resumed from checkpoint_000040 at step 40 (torch)
                name, _, fmt = str(ckpt).partition(" ")
                self.view.note(f"[orch] resumed from {name} at step {step} {fmt}".rstrip())
        self.attempts = max(self.attempts, len(got))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
