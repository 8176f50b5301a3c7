"""orchestrator.memory: parameter counts on meta, ZeRO formulas, strategy: auto."""

from __future__ import annotations

import types

import pytest

from orchestrator import memory
from orchestrator.errors import SpecError
from orchestrator.memory import GiB
from orchestrator.spec import JobSpec, load_spec_text

PSI = 1_000_000


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_paper_formulas_mixed_precision_adam(n):
    f = lambda o: memory.paper_states(o, PSI, n, "bf16")  # noqa: E731
    assert f("ddp") == 16 * PSI
    assert f("zero1") == pytest.approx(4 * PSI + 12 * PSI / n)
    assert f("zero2") == pytest.approx(2 * PSI + 14 * PSI / n)
    assert f("zero3") == pytest.approx(16 * PSI / n)
    assert f("fsdp") == pytest.approx(16 * PSI / n)


@pytest.mark.parametrize("n", [1, 2, 8])
def test_paper_formulas_fp32_and_sgd(n):
    f = lambda o, opt=8: memory.paper_states(o, PSI, n, "fp32", opt)  # noqa: E731
    assert f("ddp") == 16 * PSI
    assert f("zero1") == pytest.approx(8 * PSI + 8 * PSI / n)
    assert f("zero2") == pytest.approx(4 * PSI + 12 * PSI / n)
    assert f("zero3") == pytest.approx(16 * PSI / n)
    # SGD with momentum keeps 4 bytes of state per parameter, plain SGD none.
    assert memory.optimizer_state_bytes("sgd", 0.9) == 4
    assert memory.optimizer_state_bytes("sgd", 0.0) == 0
    assert f("ddp", 4) == 12 * PSI


def test_deepspeed_formula_t5_3b_matches_the_printed_figures():
    # DeepSpeed 0.19's estimators print these for 2,851.6M params / 32.9M largest layer on 8
    # GPUs (tests/integration/test_strategies.py calls the installed estimators themselves).
    psi, big = 2_851_598_336, 32_899_072
    got = {o: memory.deepspeed_estimate(o, psi, 8, big) / GiB for o in (
        "zero2", "zero2_offload_opt", "zero3", "zero3_offload_opt", "zero3_offload_all")}
    want = {"zero2": 11.29, "zero2_offload_opt": 5.31, "zero3": 6.10,
            "zero3_offload_opt": 0.79, "zero3_offload_all": 0.12}
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=0.006), k


@pytest.mark.parametrize("psi, n", [(PSI, 2), (PSI, 8), (2_851_598_336, 8)])
def test_engine_zero2_is_deepspeeds_count_with_its_gradient_bucket(psi, n):
    st = memory.engine_states("zero2", psi, n, "bf16", 8)
    ds = memory.deepspeed_estimate("zero2", psi, n, 0)
    # DeepSpeed's count (2Ψ + 18Ψ/N) holds a 2Ψ/N 16-bit gradient partition; the engine's
    # high-water mark is the 16-bit reduce bucket instead: min(Ψ, reduce_bucket_size).
    bucket = 2 * min(psi, memory.REDUCE_BUCKET)
    assert st.total == pytest.approx(ds - 2 * psi / n + bucket, rel=1e-6)
    # ... and the paper's figure plus DeepSpeed's fp32 gradient partition (4Ψ/N) and bucket.
    paper = memory.paper_states("zero2", psi, n, "bf16")
    assert st.total == pytest.approx(paper + 4 * psi / n + bucket - 2 * psi / n, rel=1e-6)


def test_count_parameters_on_meta_mnist():
    from jobs import mnist_mlp

    model = memory.build_on_meta(mnist_mlp, mnist_mlp.Args())
    assert next(model.parameters()).is_meta
    c = memory.count_parameters(model)
    assert c.total == c.trainable == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    assert c.largest_layer == 784 * 512 + 512


def test_tied_weights_counted_once():
    import torch.nn as nn

    emb = nn.Embedding(100, 8)
    head = nn.Linear(8, 100, bias=False)
    head.weight = emb.weight
    c = memory.count_parameters(nn.Sequential(emb, head))
    assert c.total == 800


def test_activation_estimate_mlp_meta_forward():
    from jobs import mnist_mlp

    args = mnist_mlp.Args(batch_size=64)
    model = memory.build_on_meta(mnist_mlp, args)
    got, how = memory.activation_bytes(mnist_mlp, args, model, "fp32")
    # Linear and ReLU outputs: 512 + 512 + 256 + 256 + 10 per example, 4 bytes each.
    assert got == 64 * (512 + 512 + 256 + 256 + 10) * 4
    assert "batch 64" in how
    half, _ = memory.activation_bytes(mnist_mlp, args, model, "bf16")
    assert half == got / 2


def test_transformer_activation_formula():
    shape = {"batch": 2, "seq": 512, "hidden": 1024, "layers": 4, "heads": 16, "vocab": 0}
    per_layer = 512 * 2 * 1024 * (34 + 5 * 16 * 512 / 1024)
    assert memory.transformer_activation_bytes(shape, "bf16") == 4 * per_layer
    assert memory.transformer_activation_bytes(shape, "fp32") == 8 * per_layer


def _big_workload(params_millions: int):
    """A fake workload: an embedding plus square layers, about `params_millions` M params."""
    import torch.nn as nn

    from orchestrator.strategy import OptimArgs

    class Args(OptimArgs):
        batch_size: int = 1

    def build_model(args):
        layers = max(1, params_millions // 16)  # 4096 x 4096 = 16.8M each
        return nn.Sequential(*[nn.Linear(4096, 4096, bias=False) for _ in range(layers)])

    return types.SimpleNamespace(Args=Args, build_model=build_model,
                                 activation_shape=lambda a: {"batch": 1, "seq": 128, "hidden": 4096,
                                                             "layers": 1, "heads": 32})


def _spec(**kw):
    base = {"name": "t", "workload": "mnist_mlp", "strategy": "auto",
            "resources": {"workers": 8, "gpus_per_worker": 1, "gpu_memory_gb": 80},
            "precision": "bf16"}
    for k, v in kw.items():
        if isinstance(v, dict):
            base[k] = {**base.get(k, {}), **v}
        else:
            base[k] = v
    return JobSpec.model_validate(base)


@pytest.mark.parametrize("gpu_gb, want", [
    (80, "ddp"),          # 1.68B x 16 B = 25 GiB
    (24, "ZeRO-1"),       # 4Ψ + 16Ψ/8 = 9.4 GiB
    (10, "ZeRO-2"),       # 2Ψ + 18Ψ/8 = 6.7 GiB
    (6, "fsdp"),          # 16Ψ/8 = 3.1 GiB (+ gather buffer)
])
def test_auto_picks_least_communication_that_fits(gpu_gb, want):
    wl = _big_workload(1600)
    spec = _spec(resources={"gpu_memory_gb": gpu_gb})
    mem, strategy, why = memory.plan_memory(spec, wl)
    assert mem["option"] == want, why
    assert want.lower().replace("-", "") in strategy or strategy == "deepspeed"
    assert "strategy auto ->" in why and f"{gpu_gb:g} GiB" in why
    if strategy == "deepspeed":
        assert spec.deepspeed.stage == int(want[-1])
    assert "paper" in mem["table"] and "DS est." in mem["table"]


def test_auto_offloads_when_nothing_else_fits_and_refuses_when_even_that_fails():
    wl = _big_workload(1600)
    spec = _spec(resources={"gpu_memory_gb": 2.0})
    mem, strategy, why = memory.plan_memory(spec, wl)
    assert strategy == "deepspeed" and "offload" in mem["option"], why
    assert spec.deepspeed.offload_optimizer == "cpu"
    with pytest.raises(SpecError, match="no strategy fits"):
        memory.plan_memory(_spec(resources={"gpu_memory_gb": 0.05}), wl)


def test_auto_on_cpu_is_ddp_and_explicit_strategy_is_kept():
    from jobs import mnist_mlp

    spec = load_spec_text("name: t\nworkload: mnist_mlp\nstrategy: auto\n")
    mem, strategy, why = memory.plan_memory(spec, mnist_mlp)
    assert strategy == "ddp" and "CPU workers" in why
    assert mem["parameters"] == 535_818
    spec = load_spec_text("name: t\nworkload: mnist_mlp\nstrategy: fsdp\n")
    mem, strategy, why = memory.plan_memory(spec, mnist_mlp)
    assert strategy == "fsdp" and why == "" and mem["option"] == "fsdp"


def test_explicit_strategy_that_does_not_fit_warns():
    wl = _big_workload(1600)
    spec = _spec(strategy="ddp", resources={"gpu_memory_gb": 10})
    _mem, strategy, why = memory.plan_memory(spec, wl)
    assert strategy == "ddp" and why.startswith("warning") and "ZeRO-2" in why


def test_plan_resolves_auto_and_builds_the_deepspeed_config():
    from orchestrator.plan import plan

    spec = load_spec_text(
        "name: t\nworkload: mnist_mlp\nstrategy: auto\nprecision: bf16\n"
        "resources: {workers: 2, gpus_per_worker: 1, gpu_memory_gb: 0.005}\n")
    p = plan(spec)
    assert p.strategy == "deepspeed" and p.deepspeed_config["zero_optimization"]["stage"] >= 1
    assert "table" not in p.summary().get("memory", {})  # printed separately by orch plan
    assert any("strategy auto ->" in n for n in p.notes)
