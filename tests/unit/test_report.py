"""orch report / compare / runs filters on run directories made by
hand (no Ray, no torch, no MLflow)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from orchestrator import ledger, report
from orchestrator.report import ReportOptionError, RunNotFoundError

SPEC = {
    "name": "mnist-mlp",
    "workload": "mnist_mlp",
    "resources": {"workers": 1},
    "strategy": "ddp",
    "precision": "fp32",
    "seed": 0,
    "train": {"lr": 0.001, "hidden": [512, 256], "batch_size": 64},
}


def make_run(
    storage: Path,
    name: str,
    *,
    lr: float = 1e-3,
    steps: int = 30,
    acc: float = 0.9,
    status: str = "SUCCEEDED",
    sweep_id: str = "",
    run_dir: Path | None = None,
    kind: str = "run",
    extra: dict | None = None,
    start: float | None = None,
) -> Path:
    d = run_dir or storage / name
    d.mkdir(parents=True, exist_ok=True)
    spec = json.loads(json.dumps(SPEC))
    spec["name"] = name
    spec["train"]["lr"] = lr
    (d / "spec.resolved.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    now = time.time()
    rows = []
    for step in range(10, steps + 1, 10):
        rows.append(
            {
                "loss": 2.0 / step,
                "accuracy": acc * step / steps,
                "epoch": 0,
                "samples_per_s": 1000.0 + step,
                "step_time_s": 0.01,
                "step": step,
                "time": now + step,
            }
        )
    rows[-1]["checkpoint"] = f"checkpoint_{steps:06d}"
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "system.jsonl").write_text(
        "".join(
            json.dumps({"time": now + i, "step": i, "system/cpu_rss_mb": 500.0 + i}) + "\n"
            for i in range(5)
        )
    )
    ck = d / f"checkpoint_{steps:06d}"
    ck.mkdir(exist_ok=True)
    (ck / "model.pt").write_bytes(b"x" * 1000)
    (ck / "_COMPLETE").write_text("{}")
    final = {"loss": 2.0 / steps, "accuracy": acc, "step": steps}
    (d / "summary.json").write_text(
        json.dumps(
            {
                "run_name": name,
                "status": status,
                "metrics": final,
                "checkpoint": str(ck),
                "run_dir": str(d),
                "wall_time_s": 12.5,
            }
        )
    )
    ledger.record(
        storage,
        run_id=f"{name}-id",
        run_name=name,
        workload="mnist_mlp",
        status=status,
        start_time=start or now,
        end_time=(start or now) + 10,
        metrics=final,
        run_dir=str(d),
        latest_checkpoint=str(ck),
        sweep_id=sweep_id,
        kind=kind,
        parent_run=sweep_id,
        extra=extra,
    )
    return d


def imgs(page: str) -> list[str]:
    return re.findall(
        r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]{200,})"', page
    )


def hrefs(page: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', page)


def test_run_report_holds_plots_checkpoints_spec_and_links(tmp_path):
    storage = tmp_path / "runs"
    d = make_run(storage, "mnist-a")
    comp = d / "compress_20250101-030000"  # what `orch compress` writes
    comp.mkdir()
    (comp / "report.json").write_text(
        json.dumps(
            {
                "stages": [
                    {"stage": "original", "params": 535818, "metrics": {"accuracy": 0.9}},
                    {"stage": "prune0.9", "params": 53582, "metrics": {"accuracy": 0.85}},
                ],
                "exports": [{"format": "onnx", "ok": True, "max_abs_diff": 1e-6}],
                "quantize_mode": "dynamic",
            }
        )
    )
    (comp / "report.md").write_text("| stage | params |\n|---|---|\n| MDTABLE | 1 |\n")
    index = report.report("mnist-a", storage)
    assert index == d / "report" / "index.html"
    page = index.read_text()
    alts = [a for a, _ in imgs(page)]
    assert alts == ["learning curves", "throughput"]
    assert (d / "report" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (d / "report" / "throughput.png").exists()
    links = hrefs(page)
    assert "../checkpoint_000030" in links and "../spec.resolved.yaml" in links
    for link in links:  # every relative link resolves
        assert (index.parent / link).exists(), link
    assert "prune0.9" in page and "metrics.accuracy" in page and "onnx" in page  # compression
    assert "MDTABLE" not in page  # report.md repeats report.json: shown once
    assert "lr: 0.001" in page  # the resolved spec
    assert "SUCCEEDED" in page


def test_report_by_directory_and_missing_run(tmp_path):
    storage = tmp_path / "runs"
    d = make_run(storage, "mnist-b")
    assert report.report(str(d), tmp_path / "elsewhere").exists()
    with pytest.raises(RunNotFoundError, match="no-such-run"):
        report.report("no-such-run", storage)


def test_sweep_report_links_trials_both_ways(tmp_path):
    storage = tmp_path / "runs"
    sweep_dir = storage / "sw1"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "sweep.json").write_text(
        json.dumps(
            {
                "sweep_id": "sw1",
                "spec": {
                    **SPEC,
                    "sweep": {
                        "metric": "accuracy",
                        "mode": "max",
                        "search_space": {"train.lr": {"loguniform": [1e-4, 1e-1]}},
                    },
                },
            }
        )
    )
    ledger.record(
        storage,
        run_id="sw1",
        run_name="sw1",
        workload="mnist_mlp",
        status="SUCCEEDED",
        run_dir=str(sweep_dir),
        sweep_id="sw1",
        kind="sweep",
        extra={"metric": "accuracy", "mode": "max"},
    )
    for i, (lr, acc) in enumerate([(1e-3, 0.8), (1e-2, 0.95)]):
        tid = f"t{i}"
        make_run(
            storage,
            tid,
            lr=lr,
            acc=acc,
            sweep_id="sw1",
            kind="trial",
            run_dir=sweep_dir / "trials" / tid,
            extra={"trial_id": tid, "config": {"train.lr": lr}},
        )
    index = report.report("sw1", storage)
    assert index == sweep_dir / "report" / "index.html"
    page = index.read_text()
    assert [a for a, _ in imgs(page)] == ["trial curves", "final metric per trial"]
    trial_links = re.findall(r'class="trial-link" href="([^"]+)"', page)
    assert len(trial_links) == 2
    # ranked by the sweep metric, best first
    assert "trials/t1/report/index.html" in trial_links[0]
    assert 'class="best"' in page
    for link in trial_links:
        trial_page = (index.parent / link).resolve()
        back = re.findall(r'class="sweep-link" href="([^"]+)"', trial_page.read_text())
        assert back and (trial_page.parent / back[0]).resolve() == index.resolve()
    # a trial's own report (by its directory) links to the sweep too
    t_index = report.report(str(sweep_dir / "trials" / "t0"), storage)
    assert re.search(r'class="sweep-link"', t_index.read_text())


def test_compare_shows_only_differing_keys(tmp_path):
    storage = tmp_path / "runs"
    a = report.load_run(make_run(storage, "a", lr=1e-3, acc=0.9))
    b = report.load_run(make_run(storage, "b", lr=3e-4, acc=0.8))
    cmp = report.compare([a, b])
    assert list(cmp["spec"]) == ["train.lr"]  # name is ignored, identical keys hidden
    assert cmp["spec"]["train.lr"] == [1e-3, 3e-4]
    assert cmp["metrics"]["accuracy"] == [0.9, 0.8]
    png = report.compare_png([a, b])
    assert png[:4] == b"\x89PNG"


def test_compare_cli_prints_table_and_writes_png(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    storage = tmp_path / "runs"
    make_run(storage, "a", lr=1e-3)
    make_run(storage, "b", lr=3e-4)
    out = tmp_path / "cmp.png"
    res = CliRunner().invoke(
        app, ["compare", "a", "b", "--storage-path", str(storage), "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["runs"] == ["a", "b"] and list(data["spec"]) == ["train.lr"]
    assert out.read_bytes()[:4] == b"\x89PNG"
    res = CliRunner().invoke(app, ["compare", "a", "zzz", "--storage-path", str(storage)])
    assert res.exit_code == RunNotFoundError.exit_code


def test_select_runs_filters_and_sorts(tmp_path):
    storage = tmp_path / "runs"
    old = time.time() - 5 * 86400
    make_run(storage, "old", acc=0.99, start=old)
    make_run(storage, "good", acc=0.9)
    make_run(storage, "bad", acc=0.5, status="FAILED")
    make_run(storage, "trial", acc=0.7, sweep_id="sw", kind="trial")
    rows = ledger.latest_by_run(storage)
    names = lambda rs: [r["run_name"] for r in rs]  # noqa: E731
    assert names(report.select_runs(rows, sort="accuracy")) == ["old", "good", "trial", "bad"]
    assert names(report.select_runs(rows, sort="accuracy", ascending=True))[0] == "bad"
    assert names(report.select_runs(rows, status="failed")) == ["bad"]
    assert set(names(report.select_runs(rows, status="succeeded,failed"))) == {
        "old",
        "good",
        "bad",
        "trial",
    }
    assert names(report.select_runs(rows, since="2d", sort="accuracy")) == ["good", "trial", "bad"]
    assert names(report.select_runs(rows, sweep="sw")) == ["trial"]
    assert names(report.select_runs(rows, workload="other")) == []
    assert len(report.select_runs(rows, limit=2)) == 2
    with pytest.raises(ReportOptionError, match="--status"):
        report.select_runs(rows, status="done")


def test_parse_since():
    now = dt.datetime(2025, 1, 31, 12, 0, tzinfo=dt.timezone.utc)
    assert report.parse_since("2h", now) == now - dt.timedelta(hours=2)
    assert report.parse_since("7d", now) == now - dt.timedelta(days=7)
    assert report.parse_since("2025-01-01T00:00:00+00:00", now) == dt.datetime(
        2025, 1, 1, tzinfo=dt.timezone.utc
    )
    with pytest.raises(ReportOptionError, match="--since"):
        report.parse_since("yesterday", now)


def test_runs_cli_filters(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    storage = tmp_path / "runs"
    make_run(storage, "good", acc=0.9)
    make_run(storage, "bad", acc=0.5, status="FAILED")
    res = CliRunner().invoke(app, ["runs", "--storage-path", str(storage), "--status", "failed"])
    assert res.exit_code == 0 and "bad" in res.output and "good" not in res.output
    res = CliRunner().invoke(app, ["runs", "--storage-path", str(storage), "--since", "soon"])
    assert res.exit_code == 2 and "--since" in res.output


def test_curve_keys_separate_learning_curves_from_throughput():
    rows = [
        {
            "step": 1,
            "loss": 1.0,
            "accuracy": 0.1,
            "samples_per_s": 10.0,
            "step_time_s": 0.1,
            "system/cpu_rss_mb": 5.0,
            "epoch": 0,
            "time": 1.0,
            "lr": 0.1,
        }
    ]
    assert report.curve_keys(rows) == ["loss", "accuracy", "lr"]


def test_curves_skip_points_that_were_not_measured(monkeypatch):
    """Accuracy absent before the first evaluation (or None / NaN from an older writer): no
    point there, so the curve starts at the first measured value, not at a 0.0."""
    rows = [
        {"step": 10, "loss": 2.0},
        {"step": 20, "loss": 1.5, "accuracy": None},
        {"step": 30, "loss": 1.2, "accuracy": float("nan")},
        {"step": 40, "loss": 1.0, "accuracy": 0.91, "checkpoint": "checkpoint_000040"},
        {"step": 50, "loss": float("inf"), "accuracy": 0.93},
    ]
    assert report._series(rows, "accuracy") == ([40.0, 50.0], [0.91, 0.93])
    assert report._series(rows, "loss") == ([10.0, 20.0, 30.0, 40.0], [2.0, 1.5, 1.2, 1.0])
    drawn = {}

    def keep(fig):
        for ax in fig.axes:
            if ax.get_visible():
                drawn[ax.get_title()] = [list(line.get_xdata()) for line in ax.lines]
        report._plt().close(fig)
        return b"png"

    monkeypatch.setattr(report, "_png", keep)
    assert report.plot_curves([("run", rows)], report.curve_keys(rows)) == b"png"
    assert drawn["accuracy"] == [[40.0, 50.0]] and drawn["loss"] == [[10.0, 20.0, 30.0, 40.0]]
    # A metric that never got a point has no panel at all.
    monkeypatch.setattr(report, "_png", lambda fig: b"none")
    assert report.plot_curves([("run", rows[:1])], ["accuracy"]) is None
