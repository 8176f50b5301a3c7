"""After an `orch run` of a tiny MNIST job, TensorBoard's own event reader and MLflow's own
client find the run's metrics, params and system figures; `orch report` holds its plots and
links. A resumed run continues its MLflow run and TensorBoard drops the recomputed steps."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from orchestrator import report
from orchestrator.launch import launch
from orchestrator.plan import plan
from orchestrator.rundir import read_metrics
from orchestrator.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}, ea


def mlflow_run(uri: str, experiment: str, run_name: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {uri}"
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.runName` = '{run_name}'"
    )
    return client, runs


def test_orch_run_tracks_to_tensorboard_and_mlflow_and_reports(ray_local, tmp_runs, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_runs.parent / "mlruns").as_uri()
    spec = load_spec(
        ROOT / "jobs/mnist_mlp.yaml",
        [
            "name=tracked",
            "train.max_steps=30",
            "train.log_every=5",
            "resources.workers=1",
            "checkpoint.every_steps=20",
            f"storage_path={tmp_runs}",
            f"tracking.mlflow={uri}",
            "tracking.experiment=orch-tests",
            "tracking.system_every_s=0.5",
        ],
    )
    summary = launch(plan(spec))
    assert summary["status"] == "SUCCEEDED", summary["error"]
    run_dir = Path(summary["run_dir"])
    rows = read_metrics(run_dir)
    logged = {r["step"]: r for r in rows}
    assert len(logged) >= 4

    # TensorBoard's own reader: every metric of metrics.jsonl, at its step, plus system figures
    tb, ea = scalars(run_dir)
    for key in ("loss", "accuracy"):
        want = [(s, pytest.approx(r[key], rel=1e-6)) for s, r in sorted(logged.items()) if key in r]
        assert tb[key] == want, key
    assert [s for s, _ in tb["samples_per_s"]] == sorted(
        s for s, r in logged.items() if "samples_per_s" in r
    )
    assert max(v for _, v in tb["system/cpu_rss_mb"]) > 50, "RSS of the Ray Train worker"
    hp = ea.PluginTagToContent("hparams")
    assert (
        "_hparams_/session_start_info" in hp and b"train.lr" in hp["_hparams_/session_start_info"]
    )

    # MLflow's own client: one run, its params, metric histories and status
    client, runs = mlflow_run(uri, "orch-tests", "tracked")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.001"
    assert run.data.params["resources.workers"] == "1"
    assert run.data.tags["orch.status"] == "SUCCEEDED"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == sorted(s for s, r in logged.items() if "loss" in r)
    assert run.data.metrics["accuracy"] == pytest.approx(rows[-1]["accuracy"])
    assert client.get_metric_history(run.info.run_id, "system/cpu_rss_mb")

    # orch report: plots embedded, PNG files beside, links that resolve
    index = report.report(str(run_dir), tmp_runs)
    page = index.read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 2
    assert (index.parent / "curves.png").exists() and (index.parent / "throughput.png").exists()
    links = re.findall(r'href="([^"]+)"', page)
    assert "../checkpoint_000030" in links and "../metrics.jsonl" in links
    assert all((index.parent / link).exists() for link in links)
    assert run.info.run_id in page  # the MLflow run is named on the page


def test_resumed_run_continues_its_mlflow_run_and_tensorboard_drops_recomputed_steps(
    tmp_path, monkeypatch
):
    """The driver-side tracker alone (no Ray): a first launch logs steps 10-40, the run is
    resumed from step 20, the second launch logs 30-50 again with new values."""
    from orchestrator.tracking import RunTracker, TrackingSpec, track_finished_run

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    spec = {"name": "r", "workload": "mnist_mlp", "train": {"lr": 0.01, "hidden": [8]}}
    cfg = TrackingSpec(mlflow=uri, system_every_s=0)
    metrics = run_dir / "metrics.jsonl"

    def append(steps, loss, t0=1000.0):
        with open(metrics, "a") as fh:
            for s in steps:
                fh.write(json.dumps({"step": s, "loss": loss(s), "time": t0 + s}) + "\n")

    def truncate(after_step):  # as orchestrator.rundir.truncate_metrics does it
        kept = [
            ln for ln in metrics.read_text().splitlines() if json.loads(ln)["step"] <= after_step
        ]
        tmp = metrics.with_suffix(".tmp")
        tmp.write_text("".join(ln + "\n" for ln in kept))
        os.replace(tmp, metrics)

    t1 = RunTracker(run_dir, spec, run_name="r", config=cfg, tail=False).start()
    append([10, 20, 30, 40], lambda s: 1.0 / s)
    assert t1.poll() == 4
    t1.finish("STOPPED", {"loss": 0.025})
    # resume from the step-20 checkpoint: later rows are dropped and recomputed
    truncate(20)
    t2 = RunTracker(
        run_dir,
        {**spec, "train": {**spec["train"], "lr": 0.02}},
        run_name="r",
        config=cfg,
        tail=False,
    ).start()
    append([30, 40, 50], lambda s: 2.0 / s, t0=2000.0)
    assert t2.poll() == 3
    # a worker-group restart inside the run: back to step 30, recomputed rows already there
    truncate(30)
    append([40, 50], lambda s: 3.0 / s, t0=3000.0)
    assert t2.poll() == 2
    t2.finish("SUCCEEDED", {"loss": 0.06})

    tb, _ = scalars(run_dir)
    assert tb["loss"] == [
        (10, pytest.approx(0.1)),
        (20, pytest.approx(0.05)),
        (30, pytest.approx(2 / 30)),
        (40, pytest.approx(3 / 40)),
        (50, pytest.approx(3 / 50)),
    ]
    client, runs = mlflow_run(uri, "r", "r")
    assert len(runs) == 1, "the resumed run continues the same MLflow run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert (
        run.data.params["train.lr"] == "0.01" and run.data.tags["orch.changed.train.lr"] == "0.02"
    )
    assert max(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == 50

    # a run tracked after the fact (no live tracker): the whole file is sent
    other = tmp_path / "runs" / "late"
    other.mkdir()
    (other / "spec.resolved.yaml").write_text("name: late\nworkload: mnist_mlp\n")
    (other / "metrics.jsonl").write_text(metrics.read_text())
    track_finished_run(other)
    tb_late, _ = scalars(other)
    assert [s for s, _ in tb_late["loss"]] == [10, 20, 30, 40, 50]


def test_tune_callbacks_are_rays_own_loggers(tmp_path, monkeypatch):
    """Sweeps hand these to their Tuner: Ray's TBX logger, and with tracking.mlflow Ray's
    MLflowLoggerCallback on an experiment created beforehand."""
    from mlflow import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.logger import TBXLoggerCallback

    from orchestrator.tracking import tune_callbacks

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    spec = {"name": "sw", "workload": "mnist_mlp"}
    assert [type(c) for c in tune_callbacks(spec)] == [TBXLoggerCallback]
    assert tune_callbacks({**spec, "tracking": {"tensorboard": False}}) == []
    uri = (tmp_path / "mlruns").as_uri()
    cbs = tune_callbacks({**spec, "tracking": {"mlflow": uri}}, tags={"orch.sweep_id": "sw-1"})
    assert [type(c) for c in cbs] == [TBXLoggerCallback, MLflowLoggerCallback]
    assert cbs[1].experiment_name == "sw" and cbs[1].tags == {"orch.sweep_id": "sw-1"}
    assert MlflowClient(tracking_uri=uri).get_experiment_by_name("sw") is not None
