"""orchestrator.compress.records: the ledger rows run -> compress -> export."""

from __future__ import annotations

import json

import pytest

from orchestrator.compress.measure import StageRow
from orchestrator.compress.records import record_ledger
from orchestrator.compress.report import CompressResult
from orchestrator.compress.spec import CompressSpec


def test_ledger_rows_link_run_compress_export(tmp_path):
    from orchestrator import ledger

    res = CompressResult(
        rows=[
            StageRow("original", 10, 10, 100, 90, 1.0, 2.0, {"accuracy": 0.9}),
            StageRow("int8 dynamic", 10, 10, 30, 20, 0.5, 1.0, {"accuracy": 0.89}),
        ],
        exports=[
            {"format": "onnx", "path": "m.onnx", "size_bytes": 5, "max_abs_diff": 1e-6, "ok": True}
        ],
        out_dir=str(tmp_path / "out"),
    )
    spec = CompressSpec(quantize="int8", export=["onnx"])
    cid, eids = record_ledger(
        tmp_path,
        res,
        parent_run="run-abc",
        run_name="mnist",
        workload="mnist_mlp",
        checkpoint="ck",
        spec=spec,
    )
    rows = {r["run_id"]: r for r in ledger.read_events(tmp_path).to_pylist()}
    assert rows[cid]["kind"] == "compress" and rows[cid]["parent_run"] == "run-abc"
    assert rows[eids[0]]["kind"] == "export" and rows[eids[0]]["parent_run"] == cid
    metrics = json.loads(rows[cid]["metrics"])
    assert metrics["accuracy"] == 0.89 and metrics["original_accuracy"] == 0.9
    assert metrics["size_ratio"] == pytest.approx(100 / 30)
