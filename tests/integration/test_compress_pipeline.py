"""orch compress on a trained MNIST MLP checkpoint (trained here, alone, no Ray): the issue's
must-show numbers, the CLI, ledger links and the after-training hook; plus the whole pipeline
with every stage and export on a toy model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from orchestrator import ledger, rundir
from orchestrator.compress.adapters import mnist_adapter
from orchestrator.compress.checkpoint import load_checkpoint
from orchestrator.compress.lowrank import is_low_rank
from orchestrator.compress.measure import linear_weight_bytes
from orchestrator.compress.pipeline import compress_checkpoint, compress_model, run_after_training
from orchestrator.compress.report import markdown_table
from orchestrator.compress.spec import CompressSpec
from tests.unit.compress_fixtures import mlp, toy_adapter

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 3
# The whole module takes ~2-3 min on an idle 2-core machine; a shared one can be 10x slower.
pytestmark = pytest.mark.timeout(2400)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory) -> Path:
    """A run directory with a trained MNIST MLP (3 epochs: ~0.90 test accuracy)."""
    run_dir = tmp_path_factory.mktemp("compress") / "runs" / "mnist-mlp"
    subprocess.run(
        [sys.executable, "jobs/mnist_mlp.py", "--epochs", str(EPOCHS), "--run-dir", str(run_dir)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=2400,
    )
    return run_dir


def _compress(run_dir: Path, out: str, **kw):
    spec = CompressSpec(latency_repeats=3, out=str(run_dir / out), **kw)
    return compress_checkpoint(run_dir, spec, workload="mnist_mlp")


def test_prune_90_percent_plus_finetune_within_one_point(mnist_run):
    res, _ = _compress(mnist_run, "prune", prune=0.9, finetune_steps=300, finetune_lr=1e-3)
    orig, pruned, tuned = res.rows
    weights = sum(m.weight.numel() for m in res.model if isinstance(m, nn.Linear))
    zeros = sum(int((m.weight == 0).sum()) for m in res.model if isinstance(m, nn.Linear))
    assert zeros >= 0.9 * weights - 1
    assert tuned.nonzero <= orig.nonzero * 0.1 + 1000  # biases stay
    assert orig.metrics["accuracy"] > 0.85
    assert tuned.metrics["accuracy"] >= orig.metrics["accuracy"] - 0.01, res.rows
    # the saved model has no masks: plain Linears whose zeros are in the weights themselves
    saved = torch.load(Path(res.out_dir) / "model.pt", weights_only=False)
    assert not any(k.endswith(("_orig", "_mask")) for k in saved.state_dict())
    print(markdown_table(res.rows))


def test_int8_dynamic_linear_weights_at_least_3_5x_smaller_on_disk(mnist_run):
    res, _ = _compress(mnist_run, "int8", quantize="int8")
    orig, q = res.rows
    loaded = load_checkpoint(mnist_run, workload="mnist_mlp")
    ratio = linear_weight_bytes(loaded.model) / linear_weight_bytes(res.model)
    assert ratio >= 3.5, ratio
    assert orig.size_bytes / q.size_bytes >= 3.5  # the whole state_dict, as saved
    float_file = (loaded.checkpoint_dir / "model.pt").stat().st_size
    int8_file = (Path(res.out_dir) / "model.pt").stat().st_size
    assert float_file / int8_file > 3.0  # includes pickled module code
    assert q.metrics["accuracy"] >= orig.metrics["accuracy"] - 0.01
    assert q.stage == "int8 dynamic"


def test_low_rank_half_rank_fewer_params_within_two_points(mnist_run):
    # Half rank cuts the 10-class head to rank 5, which costs accuracy by itself (0.88 -> 0.74
    # in one run); a short fine-tune of the factors recovers it.
    res, _ = _compress(mnist_run, "lowrank", low_rank=0.5, finetune_steps=150, finetune_lr=1e-3)
    orig, low, tuned = res.rows
    assert low.stage == "low-rank" and tuned.params == low.params < orig.params
    assert [m.rank for m in res.model if is_low_rank(m)] == [256, 128, 5]
    assert tuned.metrics["accuracy"] >= orig.metrics["accuracy"] - 0.02, res.rows


def test_onnx_matches_pytorch_within_1e4_and_ledger_links(mnist_run):
    import onnxruntime as ort

    res, cid = _compress(mnist_run, "onnx", export=["onnx", "pt2"])
    onnx = next(e for e in res.exports if e["format"] == "onnx")
    assert onnx["ok"] and onnx["max_abs_diff"] <= 1e-4
    # check it again here, on the whole test set
    loaded = load_checkpoint(mnist_run, workload="mnist_mlp")
    x = mnist_adapter(loaded.config).example_inputs(1000)[0]
    sess = ort.InferenceSession(onnx["path"], providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = loaded.model(x).numpy()
    assert abs(got - want).max() <= 1e-4
    pt2 = next(e for e in res.exports if e["format"] == "pt2")
    assert pt2["ok"] and pt2["path"].endswith("model.pt2")
    program = torch.export.load(pt2["path"])
    assert torch.allclose(program.module()(x), loaded.model(x), atol=1e-5)
    rows = {r["run_id"]: r for r in ledger.read_events(mnist_run.parent).to_pylist()}
    assert rows[cid]["kind"] == "compress" and rows[cid]["parent_run"] == "mnist-mlp"
    exports = [r for r in rows.values() if r["parent_run"] == cid]
    assert {r["kind"] for r in exports} == {"export"} and len(exports) == 2


def test_cli_compress_prints_the_table_and_records_rows(mnist_run):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    out = mnist_run / "cli"
    result = CliRunner().invoke(
        app,
        [
            "compress",
            str(mnist_run),
            "--workload",
            "mnist_mlp",
            "--prune",
            "0.5",
            "--structured",
            "--finetune-steps",
            "50",
            "--finetune-lr",
            "1e-3",
            "--quantize",
            "int8",
            "--export",
            "onnx",
            "--latency-repeats",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "non-zero" in result.output and "int8 dynamic" in result.output
    report = json.loads((out / "report.json").read_text())
    stages = [s["stage"] for s in report["stages"]]
    assert stages == ["original", "prune (structured)", "fine-tune", "int8 dynamic"]
    assert report["stages"][1]["params"] < report["stages"][0]["params"]  # neurons removed
    bad = CliRunner().invoke(app, ["compress", str(mnist_run), "--prune", "2"])
    assert bad.exit_code == 2 and "compress.prune" in bad.output


def test_run_after_training_compresses_and_links_to_the_run(mnist_run):
    from orchestrator.spec import validate_spec

    spec = validate_spec(
        {
            "name": "mnist-mlp",
            "workload": "mnist_mlp",
            "storage_path": str(mnist_run.parent),
            "compress": {"quantize": "int8", "latency_repeats": 2, "out": str(mnist_run / "after")},
        }
    )
    summary = {
        "status": "SUCCEEDED",
        "run_id": "mnist-mlp-1234",
        "run_name": "mnist-mlp",
        "checkpoint": str(rundir.resolve_checkpoint(mnist_run)),
        "run_dir": str(mnist_run),
    }
    got = run_after_training(spec.compress, spec.workload, summary)
    assert got["metrics"]["size_ratio"] > 3.5 and "accuracy" in got["metrics"]
    row = next(
        r for r in ledger.read_events(mnist_run.parent).to_pylist() if r["run_id"] == got["run_id"]
    )
    assert row["parent_run"] == "mnist-mlp-1234" and row["kind"] == "compress"
    assert run_after_training(spec.compress, spec.workload, {**summary, "status": "FAILED"}) is None


def test_pipeline_rows_and_report_files(tmp_path):
    m = mlp()
    ad = toy_adapter()
    spec = CompressSpec(
        low_rank=0.5,
        prune=0.8,
        finetune_steps=5,
        quantize="int8",
        export=["onnx", "torchscript"],  # torchscript: the old name, now writes pt2
        latency_repeats=1,
    )
    res = compress_model(m, ad, spec, tmp_path / "out")
    assert [r.stage for r in res.rows] == [
        "original",
        "low-rank",
        "prune",
        "fine-tune",
        "int8 dynamic",
    ]
    orig, lr, pr, ft, q = res.rows
    assert lr.params < orig.params
    assert pr.nonzero <= 0.25 * pr.params and ft.nonzero == pr.nonzero  # zeros survive training
    assert all(r.latency_b1_ms and r.latency_b64_ms and "accuracy" in r.metrics for r in res.rows)
    formats = {e["format"]: e for e in res.exports}
    assert set(formats) == {"onnx", "onnx-int8", "pt2"}
    assert formats["onnx"]["max_abs_diff"] < 1e-4 and formats["onnx"]["ok"]
    assert formats["onnx"]["exporter"] == "dynamo"
    assert formats["pt2"]["ok"] and "TorchScript is deprecated" in formats["pt2"]["note"]
    # the int8 deploy artifact: torch.export.load runs it without orchestrator's classes
    x = torch.randn(3, 20)
    program = torch.export.load(formats["pt2"]["path"])
    assert torch.allclose(program.module()(x), res.model(x), atol=1e-4)
    assert any("torch.compile" in n for n in q.notes) and q.latency_b64_ms is not None
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == [r.stage for r in res.rows]
    assert "| stage |" in (tmp_path / "out" / "report.md").read_text()
    loaded = torch.load(tmp_path / "out" / "model.pt", weights_only=False)
    x = torch.randn(2, 20)
    assert torch.allclose(loaded(x), res.model(x))
    # the original model was not touched
    assert isinstance(m[0], nn.Linear) and int((m[0].weight == 0).sum()) == 0
