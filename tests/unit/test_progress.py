"""orch run's progress (orchestrator/launch/progress.py): one unwrapped line per row off a
terminal, a bar with total, rate and ETA on one, `-` for a metric not measured yet; and the
source of those rows: a workload leaves out a metric it has not measured (no 0.0 accuracy
before the first evaluation), and a sweep trial still gives Tune what it requires."""

from __future__ import annotations

import io
import json
import math

import pytest
from rich.console import Console

from orchestrator import rundir
from orchestrator.launch import progress
from orchestrator.launch.progress import Format, Tail, Tracker


def _console(terminal: bool, width: int = 80) -> Console:
    return Console(
        file=io.StringIO(),
        width=width,
        force_terminal=terminal,
        color_system=None,
        legacy_windows=False,
    )


def _rows(steps, t0=1000.0, dt=0.5, **extra):
    """Rows as Session.log writes them: loss, throughput, a long tail of other metrics; no
    accuracy (not evaluated yet) unless given."""
    out = []
    for i, s in enumerate(steps):
        out.append(
            {
                "step": s,
                "epoch": 0,
                "loss": 2.0 / (i + 1),
                "samples_per_s": 12345.6,
                "step_time_s": 0.0103,
                "time": t0 + i * dt * 20,
                **extra,
            }
        )
    return out


def _tail_with_rows(tmp_path, console, rows, total=1875, metrics=("loss", "accuracy", "val_loss")):
    run = tmp_path / "run"
    run.mkdir()
    tail = Tail(str(run), console, progress.train_line, run_id="r1")  # skips existing rows
    rundir.record_attempt(
        str(run),
        "r1",
        {"resumed_from_step": None, "workers": [], "total_steps": total, "metrics": list(metrics)},
    )
    for r in rows:
        rundir.append_metrics(str(run), r)
    tail.poll()
    tail.view.close()
    return tail


def test_off_a_terminal_each_row_is_one_unwrapped_line(tmp_path):
    console = _console(terminal=False, width=80)
    rows = _rows([20, 40, 60], lr=3e-4, grad_norm=1.25)
    _tail_with_rows(tmp_path, console, rows)
    lines = console.file.getvalue().splitlines()
    assert len(lines) == len(rows)  # one line per row, nothing wrapped onto a second line
    assert all(len(line) > 80 for line in lines)  # longer than the console: not wrapped
    first, last = lines[0], lines[-1]
    assert first.startswith("step     20/1875") and "epoch 0" in first
    assert "accuracy -" in first and "val_loss -" in first  # expected, not measured yet
    assert "0.0000" not in console.file.getvalue()
    assert "samples/s 12,346" in first and "s/step 0.0103" in first
    # Rate from the rows' times: 40 steps in 20 s; ETA = (1875 - 60) / 2 steps/s.
    assert "2.0 steps/s" in last and f"ETA {progress.duration((1875 - 60) / 2.0)}" in last
    assert "ETA -" in first  # one row: no rate yet
    assert "\x1b[" not in console.file.getvalue()  # no control codes in a log


def test_a_measured_metric_shows_and_a_later_missing_one_is_a_dash():
    tr = Tracker(total=100, expect=("loss", "accuracy"))
    view = progress.LineView(_console(False), Format("train"), tr)
    tr.add({"step": 10, "time": 0.0})
    before = view.text({"step": 10, "loss": 0.5})
    after = view.text({"step": 10, "loss": 0.5, "accuracy": 0.9375})
    assert "accuracy -" in before and "accuracy 0.9375" in after
    nan = view.text({"step": 10, "loss": float("nan")})
    assert "loss nan" in nan  # a measured NaN (a diverged run) is shown as such


def test_without_a_total_the_line_has_the_step_and_rate_but_no_eta(tmp_path):
    console = _console(terminal=False)
    run = tmp_path / "run"
    run.mkdir()
    tail = Tail(str(run), console, progress.train_line)  # no run id: no attempts read
    for r in _rows([5, 10]):
        rundir.append_metrics(str(run), r)
    tail.poll()
    lines = console.file.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("step      5  epoch 0")
    assert "ETA" not in lines[1] and lines[1].endswith("  2.00 s/step")  # 5 steps in 10 s
    assert "accuracy" not in lines[1]  # neither reported nor expected


def test_on_a_terminal_a_bar_with_total_rate_and_eta(tmp_path):
    console = _console(terminal=True, width=200)
    rows = _rows([20, 40, 60]) + [
        {**_rows([80])[0], "time": 1060.0, "accuracy": 0.91, "checkpoint": "/x/checkpoint_000080"}
    ]
    tail = _tail_with_rows(tmp_path, console, rows)
    assert isinstance(tail.view, progress.BarView)
    out = console.file.getvalue()
    assert "━" in out  # the bar
    assert "80/1875" in out and "4%" in out
    # 60 steps in 60 s of row time: 1 step/s; ETA of the 1795 steps left.
    assert "1.0 steps/s" in out and f"ETA {progress.duration(1795)}" in out
    assert "accuracy 0.9100" in out
    assert "[orch] saved checkpoint_000080 at step 80" in out  # printed above the bar


def test_rate_counts_from_each_attempts_first_row():
    tr = Tracker(total=1000)
    tr.add({"step": 500, "time": 100.0})  # resumed at 500: the rate starts here
    assert tr.rate is None and tr.eta_text() == "ETA -"
    tr.add({"step": 600, "time": 110.0})
    assert tr.rate == pytest.approx(10.0) and tr.eta_s == pytest.approx(40.0)
    assert tr.position() == "   600/1000  60%"
    tr.restart()
    tr.add({"step": 300, "time": 200.0})  # cut back to a checkpoint
    assert tr.rate is None and tr.step == 300


def test_rllib_total_is_a_limit_so_the_eta_is_an_upper_bound():
    tr = Tracker(total=200_000, bound=True)
    fmt = Format("rllib", total=200_000, bound=True, unit="env step")
    view = progress.LineView(_console(False), fmt, tr)
    row = {"step": 12_000, "env_steps": 12_000, "iteration": 12, "episode_return_mean": None}
    tr.add({**row, "time": 0.0})
    tr.add({**row, "step": 14_000, "env_steps": 14_000, "time": 1.0})
    text = view.text({**row, "step": 14_000, "env_steps": 14_000})
    assert "env steps   14,000/200,000" in text and "mean return      -" in text
    assert "2,000.0 env steps/s" in text and "ETA <=1m33s" in text
    assert progress.rllib_line(row).startswith("iter   12  env steps   12,000  mean return")


def test_duration_and_rate_text():
    assert [progress.duration(s) for s in (5, 181, 7500, 90000)] == [
        "5s",
        "3m01s",
        "2h05m",
        "1d01h",
    ]
    assert progress.rate_text(None) == "- steps/s"
    assert progress.rate_text(0.5) == "2.00 s/step"


def test_format_of_maps_the_line_functions():
    assert Format.of(progress.train_line).kind == "train"
    assert Format.of(progress.rllib_line).kind == "rllib"
    custom = Format.of(lambda row: f"custom {row['step']}")
    assert custom.kind == "custom" and custom({"step": 3}) == "custom 3"


# -- the source: no metric that was not measured -------------------------------------------


def test_session_leaves_out_a_metric_given_as_none(tmp_path):
    from orchestrator.worker.session import Session

    sess = Session(run_dir=str(tmp_path))
    sess.log({"loss": 0.5, "accuracy": None}, 10)
    (row,) = rundir.read_metrics(tmp_path)
    assert row["loss"] == 0.5 and "accuracy" not in row


def test_set_progress_goes_into_the_attempt_record(tmp_path):
    from orchestrator.worker.session import Session

    sess = Session(run_dir=str(tmp_path), config={"run_id": "r9"})
    sess.set_progress(1875, metrics=("loss", "accuracy"))
    sess.record_attempt(None)
    (rec,) = rundir.read_attempts(str(tmp_path), "r9")
    assert rec["total_steps"] == 1875 and rec["metrics"] == ["loss", "accuracy"]


def test_mnist_rows_have_no_accuracy_before_the_first_evaluation(tmp_path):
    """The workload evaluates at the end of each epoch (here: at step 6, the last): the rows
    before carry no accuracy at all, so no progress line, metrics file, ledger row or curve
    shows a 0.0 that was never measured."""
    from jobs import mnist_mlp

    config = {
        "train": {"epochs": 1, "max_steps": 6, "log_every": 2},
        "data": {},
        "seed": 0,
        "checkpoint": {"every_steps": 3, "keep": 2},
        "run_dir": str(tmp_path),
    }
    final = mnist_mlp.train_loop(config)
    rows = rundir.read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [2, 3, 4, 6]
    assert all("accuracy" not in r for r in rows[:-1])
    assert 0.0 < rows[-1]["accuracy"] == pytest.approx(final["accuracy"])
    state = json.loads((tmp_path / "checkpoint_000003" / "state.json").read_text())
    assert "accuracy" not in state["metrics"]  # what Ray Train is told at that checkpoint
    tr = Tracker(total=6, expect=("loss", "accuracy"))
    view = progress.LineView(_console(False), Format("train"), tr)
    lines = [view.text(r) for r in rows]
    assert all("accuracy -" in line and "0.0000" not in line for line in lines[:-1])


# -- sweeps: Tune requires the metric in every report -----------------------------------------


def test_for_tune_skips_rows_without_the_metric_unless_they_hold_a_checkpoint():
    from orchestrator.sweep.trial import for_tune

    assert for_tune({"loss": 1.0, "step": 20}, "accuracy") is None
    with_ckpt = for_tune({"loss": 1.0, "step": 100}, "accuracy", checkpoint=True)
    assert math.isnan(with_ckpt["accuracy"]) and with_ckpt["loss"] == 1.0
    measured = {"loss": 1.0, "accuracy": 0.9}
    assert for_tune(measured, "accuracy") is measured
    final = {"loss": 1.0, "finished": 1}
    assert for_tune(final, "accuracy") is final  # Tune's own error names a missing metric


def test_the_driver_says_which_checkpoint_each_attempt_resumed_from(tmp_path):
    """The "resumed from" line comes from the attempt record the workers write, not from a
    worker's stdout (Ray's log monitor may deliver that late, or after the driver exited)."""
    console = _console(terminal=False)
    run = tmp_path / "run"
    run.mkdir()
    tail = Tail(str(run), console, progress.train_line, run_id="r1")
    rundir.record_attempt(
        str(run),
        "r1",
        {"resumed_from_step": 40, "resumed_from": "checkpoint_000040 (pipeline)", "workers": []},
    )
    tail.poll()
    rundir.record_attempt(
        str(run),
        "r1",
        {
            "resumed_from_step": 64,
            "resumed_from": "checkpoint_000064 (torch)",
            "workers": [{"node_id": "6359760e9c5dabc"}, {"node_id": "e3f60607870dabc"}],
        },
    )
    tail.poll()
    tail.poll()  # nothing new: no line twice
    lines = console.file.getvalue().splitlines()
    assert lines == [
        "[orch] resumed from checkpoint_000040 at step 40 (pipeline)",
        "[orch] attempt 2 (restart 1): resumed from step 64 (checkpoint_000064 (torch)); "
        "workers on node(s) 6359760e9c5d, e3f60607870d",
    ]
