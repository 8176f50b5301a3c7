"""orchestrator.compress on tiny models: spec validation, each stage's maths, the report, and
the light import the CLI depends on. No Ray, no training data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from orchestrator import compress as C
from orchestrator.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))


def toy_adapter(seed: int = 0) -> C.Adapter:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 20, generator=g)
    y = (x[:, :4].argmax(1))
    return C.classifier_adapter(x[:192], y[:192], x[192:], y[192:])


# --- spec ------------------------------------------------------------------------------------


def test_spec_rejects_unknown_keys_and_bad_values_naming_fields():
    with pytest.raises(SpecError) as err:
        C.parse_spec({"prune": 1.5, "quantise": "int8", "export": ["tflite"]})
    text = str(err.value)
    assert "compress.prune" in text and "compress.quantise" in text and "compress.export" in text
    assert "did you mean 'quantize'" in text


def test_spec_cross_field_rules():
    for bad, words in [({"low_rank": 0.5, "low_rank_energy": 0.9}, "not both"),
                       ({"structured": True}, "structured"),
                       ({}, "nothing to do"),
                       ({"finetune_steps": 10, "quantize": "int8"}, "finetune_steps")]:
        with pytest.raises(SpecError, match=words):
            C.parse_spec(bad)
    ok = C.parse_spec({"prune": 0.9, "finetune_steps": 10, "export": ["onnx"]})
    assert ok.prune == 0.9 and ok.export == ["onnx"]


def test_jobspec_validates_the_compress_section_through_this_model():
    from orchestrator.spec import validate_spec

    base = {"name": "x", "workload": "mnist_mlp"}
    with pytest.raises(SpecError, match="compress.low_rank"):
        validate_spec({**base, "compress": {"low_rank": 0}})
    spec = validate_spec({**base, "compress": {"quantize": "int8"}})
    assert spec.compress == {"quantize": "int8"}


def test_import_stays_light():
    code = ("import sys, orchestrator.compress; "
            "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    assert out.stdout.strip() == "False"


# --- pruning ---------------------------------------------------------------------------------


def test_global_unstructured_prune_is_permanent_and_hits_the_fraction():
    m = mlp()
    weights = sum(lin.weight.numel() for lin in m if isinstance(lin, nn.Linear))
    notes, pruned = C.prune_model(m, 0.75)
    zeros = sum(int((lin.weight == 0).sum()) for lin in m if isinstance(lin, nn.Linear))
    assert zeros == round(0.75 * weights)
    assert not any(hasattr(lin, "weight_mask") or lin._forward_pre_hooks for lin in m)
    assert all("weight_orig" not in k for k in m.state_dict())
    assert len(pruned) == 3 and "global L1" in notes[0]


def test_structured_prune_removes_neurons_and_keeps_the_function():
    m = mlp()
    x = torch.randn(8, 20)
    notes, _ = C.prune_model(m, 0.5, structured=True)
    # hidden layers shrank for real; the output layer kept its 4 outputs
    assert m[0].out_features == 16 and m[2].in_features == 16
    assert m[2].out_features == 8 and m[4].in_features == 8 and m[4].out_features == 4
    assert any("output layer" in n for n in notes)
    assert m(x).shape == (8, 4)


def test_compaction_is_exact():
    m = mlp()
    with torch.no_grad():
        m[0].weight[:5] = 0
        m[0].bias[:5] = 0
    x = torch.randn(8, 20)
    before = m(x)
    removed, _ = C.compact_sequential_chains(m)
    assert removed == 5 and m[0].out_features == 27 and m[2].in_features == 27
    assert torch.allclose(m(x), before, atol=1e-6)


def test_prune_names_layer_types_it_leaves():
    m = nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 4))
    notes, _ = C.prune_model(m, 0.5)
    assert any("Embedding x1" in n and "LayerNorm x1" in n for n in notes)
    assert isinstance(m[0], nn.Embedding) and isinstance(m[1], nn.LayerNorm)


# --- low rank --------------------------------------------------------------------------------


def test_choose_rank_by_ratio_and_energy():
    s = torch.tensor([10.0, 5.0, 1.0, 0.1])
    assert C.choose_rank(s, ratio=0.5) == 2
    # squared: 100, 25, 1, 0.01 of 126.01 -> cumulative 0.794, 0.992, 0.99992, 1
    assert C.choose_rank(s, energy=0.5) == 1
    assert C.choose_rank(s, energy=0.99) == 2
    assert C.choose_rank(s, energy=0.995) == 3
    assert C.choose_rank(s, energy=1.0) == 4


def test_factorization_is_two_smaller_linears_equal_to_the_truncated_svd():
    torch.manual_seed(0)
    lin = nn.Linear(40, 30)
    f = C.factorize_linear(lin, 10)
    assert [type(c) for c in f] == [nn.Linear, nn.Linear]
    assert f[0].weight.shape == (10, 40) and f[1].weight.shape == (30, 10) and f[0].bias is None
    u, s, vh = torch.linalg.svd(lin.weight.detach())
    best = (u[:, :10] * s[:10]) @ vh[:10]
    assert torch.allclose(f[1].weight @ f[0].weight, best, atol=1e-5)
    x = torch.randn(5, 40)
    assert torch.allclose(f(x), x @ best.T + lin.bias, atol=1e-5)
    full = C.factorize_linear(lin, 30)
    assert torch.allclose(full(x), lin(x), atol=1e-5)


def test_low_rank_shrinks_params_and_keeps_layers_that_would_grow():
    m = mlp()
    before = sum(p.numel() for p in m.parameters())
    notes = C.low_rank(m, ratio=0.5)
    after = sum(p.numel() for p in m.parameters())
    assert after < before
    assert C.is_low_rank(m[0]) and m[0].rank == 10    # 20x32 at rank 10: 520 < 640 weights
    assert C.is_low_rank(m[4]) and m[4].rank == 2     # 16x4 at rank 2: 40 < 64
    assert notes[0] == "3 Linear(s) factorized (rank ratio 0.5)"
    assert m(torch.randn(3, 20)).shape == (3, 4)
    m = mlp()
    notes = C.low_rank(m, ratio=0.9)                  # rank 18 of 20x32: 936 > 640 weights
    assert isinstance(m[0], nn.Linear) and any("kept whole" in n for n in notes)


def test_low_rank_skips_excluded_and_tied():
    m = mlp()
    C.low_rank(m, ratio=0.25, exclude=["2"])
    assert isinstance(m[2], nn.Linear) and C.is_low_rank(m[0])
    emb = nn.Embedding(12, 8)
    head = nn.Linear(8, 12, bias=False)
    head.weight = emb.weight
    tied = nn.ModuleDict({"emb": emb, "head": head})
    notes = C.low_rank(tied, ratio=0.25)
    assert tied["head"] is head and any("tied" in n and "head" in n for n in notes)


# --- quantization ----------------------------------------------------------------------------


def test_dynamic_int8_linear_weights_about_4x_smaller_and_close():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 8)).eval()
    x = torch.randn(4, 256)
    q, notes = C.quantize_dynamic_int8(m)
    ratio = C.linear_weight_bytes(m) / C.linear_weight_bytes(q)
    assert ratio > 3.5
    assert (q(x) - m(x)).abs().max() < 0.05
    params, nonzero = C.count_params(q)
    assert params == sum(p.numel() for p in m.parameters())
    assert any("Linear x2" in n for n in notes)


def test_dynamic_int8_names_conv_it_cannot_handle():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    q, notes = C.quantize_dynamic_int8(m)
    assert isinstance(q[0], nn.Conv2d)
    assert any("Conv2d x1" in n for n in notes)
    assert q(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_auto_without_calibration_falls_back_to_dynamic_and_says_why():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    ad = C.Adapter(example_inputs=lambda bs: (torch.randn(bs, 1, 8, 8),))
    _q, notes, mode = C.quantize_int8(m, ad, "auto", 2)
    assert mode == "dynamic" and any("calibration set" in n for n in notes)
    with pytest.raises(C.CompressError, match="calibration"):
        C.quantize_int8(m, ad, "static", 2)


# --- the pipeline and its report -------------------------------------------------------------


def test_find_checkpoint_errors_are_clear(tmp_path):
    from orchestrator.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no such"):
        C.find_checkpoint(tmp_path / "nope")
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="checkpoint_NNNNNN"):
        C.find_checkpoint(tmp_path / "run")
    half = tmp_path / "run" / "checkpoint_000010"
    half.mkdir()
    (half / "model.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="incomplete"):
        C.find_checkpoint(half)


def test_workload_without_hooks_is_told_what_to_add():
    import types

    mod = types.ModuleType("jobs.fake")
    with pytest.raises(C.CompressError, match="example_inputs"):
        C.adapter_for_workload("fake", mod, {})
    mod.example_inputs = lambda config, bs: (torch.zeros(bs, 3),)
    ad = C.adapter_for_workload("fake", mod, {})
    assert ad.example_inputs(5)[0].shape == (5, 3) and ad.evaluate is None


def test_ledger_rows_link_run_compress_export(tmp_path):
    from orchestrator import ledger

    res = C.CompressResult(
        rows=[C.StageRow("original", 10, 10, 100, 90, 1.0, 2.0, {"accuracy": 0.9}),
              C.StageRow("int8 dynamic", 10, 10, 30, 20, 0.5, 1.0, {"accuracy": 0.89})],
        exports=[{"format": "onnx", "path": "m.onnx", "size_bytes": 5, "max_abs_diff": 1e-6,
                  "ok": True}], out_dir=str(tmp_path / "out"))
    spec = C.CompressSpec(quantize="int8", export=["onnx"])
    cid, eids = C.record_ledger(tmp_path, res, parent_run="run-abc", run_name="mnist",
                                workload="mnist_mlp", checkpoint="ck", spec=spec)
    rows = {r["run_id"]: r for r in ledger.read_events(tmp_path).to_pylist()}
    assert rows[cid]["kind"] == "compress" and rows[cid]["parent_run"] == "run-abc"
    assert rows[eids[0]]["kind"] == "export" and rows[eids[0]]["parent_run"] == cid
    metrics = json.loads(rows[cid]["metrics"])
    assert metrics["accuracy"] == 0.89 and metrics["original_accuracy"] == 0.9
    assert metrics["size_ratio"] == pytest.approx(100 / 30)
