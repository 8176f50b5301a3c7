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
    got = {
        o: memory.deepspeed_estimate(o, psi, 8, big) / GiB
        for o in ("zero2", "zero2_offload_opt", "zero3", "zero3_offload_opt", "zero3_offload_all")
    }
    want = {
        "zero2": 11.29,
        "zero2_offload_opt": 5.31,
        "zero3": 6.10,
        "zero3_offload_opt": 0.79,
        "zero3_offload_all": 0.12,
    }
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=0.006), k


@pytest.mark.parametrize(
    "psi, n, largest", [(PSI, 2, 0), (PSI, 8, 0), (2_851_598_336, 8, 32_899_072)]
)
def test_engine_zero2_is_deepspeeds_count_with_its_gradient_bucket(psi, n, largest):
    st = memory.engine_states("zero2", psi, n, "bf16", 8, largest)
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
    assert c.sizes == (784 * 512, 512, 512 * 256, 256, 256 * 10, 10)  # parameters() order


# --- ZeRO-1/2 flat layout per rank -------------------------------------------------------------


def _layout(sizes, n):
    return [(p.start, p.end, p.params, p.kept, p.padding) for p in memory.zero_partitions(sizes, n)]


def test_zero_partitions_hand_computed():
    # 18 elements; padded to a multiple of 2 x N, cut into N equal slices. A parameter belongs
    # to a slice it starts in or straddles the start of (DeepSpeed's get_partition_info).
    sizes = [5, 3, 8, 2]  # flat offsets 0, 5, 8, 16
    assert _layout(sizes, 2) == [
        (0, 10, (0, 1, 2), 16, 0),  # p2 (8..16) straddles 10
        (10, 20, (2, 3), 10, 2),
    ]  # 18..20 is padding
    assert _layout(sizes, 3) == [
        (0, 6, (0, 1), 8, 0),
        (6, 12, (1, 2), 11, 0),  # p1 (5..8) straddles 6
        (12, 18, (2, 3), 10, 0),
    ]
    assert _layout(sizes, 4) == [
        (0, 6, (0, 1), 8, 0),
        (6, 12, (1, 2), 11, 0),
        (12, 18, (2, 3), 10, 0),
        (18, 24, (), 0, 6),
    ]  # nothing but padding
    assert _layout(sizes, 1) == [(0, 18, (0, 1, 2, 3), 18, 0)]


def test_zero_partitions_match_deepspeed_on_the_mnist_mlp():
    # What DeepSpeed 0.19 reported for the bench's model at 2 ranks (partition_size,
    # is_param_in_current_partition, groups_padding): rank 0 keeps only the first weight.
    sizes = [784 * 512, 512, 512 * 256, 256, 256 * 10, 10]
    parts = memory.zero_partitions(sizes, 2)
    assert [p.size for p in parts] == [267_910, 267_910]
    assert [p.params for p in parts] == [(0,), (0, 1, 2, 3, 4, 5)]
    assert [p.padding for p in parts] == [0, 2]
    assert [p.kept for p in parts] == [401_408, 535_818]


def test_zero_kept_grad_bytes_bf16_and_the_fp32_view():
    p0, p1 = memory.zero_partitions([784 * 512, 512, 512 * 256, 256, 256 * 10, 10], 2)
    # bf16: the kept 16-bit gradients (and padding) + a new fp32 copy of the slice.
    assert memory.zero_kept_grad_bytes(p0, "bf16") == 2 * 401_408 + 4 * 267_910
    assert memory.zero_kept_grad_bytes(p1, "bf16") == 2 * (535_818 + 2) + 4 * 267_910
    # fp32: rank 0's slice is one piece of one weight, so the "fp32 copy" is a view of it.
    assert memory.zero_kept_grad_bytes(p0, "fp32") == 4 * 401_408
    assert memory.zero_kept_grad_bytes(p1, "fp32") == 4 * (535_818 + 2) + 4 * 267_910
    # A slice of nothing but padding: a zero tensor of its size, (fp32) viewed or (bf16) copied.
    empty = memory.zero_partitions([5, 3, 8, 2], 4)[3]
    assert memory.zero_kept_grad_bytes(empty, "fp32") == 4 * 6
    assert memory.zero_kept_grad_bytes(empty, "bf16") == 2 * 6 + 4 * 6


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_engine_zero12_per_rank_on_the_mnist_mlp(precision):
    sizes = (784 * 512, 512, 512 * 256, 256, 256 * 10, 10)
    psi, p16 = sum(sizes), 2 if precision == "bf16" else 4

    def f(o, r):
        return memory.engine_states(
            o,
            psi,
            2,
            precision,
            8,
            784 * 512 + 512,
            param_sizes=sizes,
            rank=r,
        )

    for option in ("zero1", "zero2"):
        r0, r1 = f(option, 0), f(option, 1)
        assert r0.params == r1.params == p16 * 535_820  # the padded flat buffer
        assert r0.optimizer == r1.optimizer == 12 * 267_910
        # rank 0 frees the 2nd and 3rd layers' gradients, rank 1 keeps them all; the end of
        # backward (all Ψ 16-bit gradients in flight) is the larger where that is more.
        kept0 = memory.zero_kept_grad_bytes(memory.zero_partitions(sizes, 2)[0], precision)
        assert r0.grads == max(p16 * psi, kept0)
        assert r1.grads == p16 * 535_820 + 4 * 267_910
        assert r0.grads < r1.grads
        assert f(option, None) == r1  # the worst rank
    with pytest.raises(ValueError, match="param_sizes"):
        memory.engine_states("zero1", psi, 2, precision, rank=0)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("option", ["zero1", "zero2"])
@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_worst_rank_equals_the_old_bound_when_nothing_is_freed(option, n, precision):
    # One parameter overlaps every slice: no rank frees anything, and (1001 is not a multiple
    # of 2N) the last slice has padding, so even in fp32 its fp32 gradient is a real copy.
    worst = memory.engine_states(option, 1001, n, precision, 8, 1001, param_sizes=[1001])
    bound = memory.engine_states(option, 1001, n, precision, 8, 1001)
    padded = -(-1001 // (2 * n)) * (2 * n)
    p16 = 2 if precision == "bf16" else 4
    assert bound.grads == p16 * padded + 4 * padded // n  # 16-bit gradients + fp32 slice
    assert worst == bound


MODELS = {
    "mnist": [784 * 512, 512, 512 * 256, 256, 256 * 10, 10],
    "uneven": [5, 3, 8, 2, 1000, 7, 7, 300],
    "one big": [17, 10_000_001, 3],
    "embedding + blocks": [32128 * 1024] + [1024 * 1024, 1024, 4096 * 1024, 1024 * 4096] * 24,
}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("n", [2, 3, 8, 64])
def test_rank_free_figure_bounds_every_rank(model, n):
    sizes = MODELS[model]
    psi = sum(sizes)
    for precision in ("bf16", "fp32"):
        for option in ("zero1", "zero2"):
            bound = memory.engine_states(option, psi, n, precision, 8, max(sizes))
            ranks = [
                memory.engine_states(
                    option, psi, n, precision, 8, max(sizes), param_sizes=sizes, rank=r
                )
                for r in range(n)
            ]
            assert max(r.grads for r in ranks) <= bound.grads, (option, precision)
            assert all(r.params == bound.params and r.optimizer == bound.optimizer for r in ranks)


def test_zero2_bound_covers_a_slice_bigger_than_a_bucket():
    # 4.05e9 parameters on 2 ranks, slices of 2.025e9: the 14th parameter (1.95e9..2.1e9)
    # straddles the boundary, so both ranks keep 2.1e9 gradients, 4x a reduce bucket (5e8).
    sizes = [150_000_000] * 27
    psi, size = sum(sizes), sum(sizes) // 2
    parts = memory.zero_partitions(sizes, 2)
    assert [p.kept for p in parts] == [2_100_000_000, 2_100_000_000]
    worst = memory.engine_states("zero2", psi, 2, "bf16", 8, param_sizes=sizes)
    assert worst.grads == 2 * 2_100_000_000 + 4 * size
    # The rank-free figure: a slice plus the largest layer on either edge, not a bucket.
    st = memory.engine_states("zero2", psi, 2, "bf16", 8, 150_000_000)
    assert st.grads == 2 * (size + 2 * 150_000_000) + 4 * size >= worst.grads


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

    from orchestrator.worker.optim import OptimArgs

    class Args(OptimArgs):
        batch_size: int = 1

    def build_model(args):
        layers = max(1, params_millions // 16)  # 4096 x 4096 = 16.8M each
        return nn.Sequential(*[nn.Linear(4096, 4096, bias=False) for _ in range(layers)])

    return types.SimpleNamespace(
        Args=Args,
        build_model=build_model,
        activation_shape=lambda a: {
            "batch": 1,
            "seq": 128,
            "hidden": 4096,
            "layers": 1,
            "heads": 32,
        },
    )


def _spec(**kw):
    base = {
        "name": "t",
        "workload": "mnist_mlp",
        "strategy": "auto",
        "resources": {"workers": 8, "gpus_per_worker": 1, "gpu_memory_gb": 80},
        "precision": "bf16",
    }
    for k, v in kw.items():
        if isinstance(v, dict):
            base[k] = {**base.get(k, {}), **v}
        else:
            base[k] = v
    return JobSpec.model_validate(base)


@pytest.mark.parametrize(
    "gpu_gb, want",
    [
        (80, "ddp"),  # 1.68B x 16 B = 25 GiB
        (24, "ZeRO-1"),  # 4Ψ + 16Ψ/8 = 9.4 GiB
        (10, "ZeRO-2"),  # 2Ψ + 18Ψ/8 = 6.7 GiB
        (6, "fsdp"),  # 16Ψ/8 = 3.1 GiB (+ gather buffer)
    ],
)
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
        "resources: {workers: 2, gpus_per_worker: 1, gpu_memory_gb: 0.005}\n"
    )
    p = plan(spec)
    assert p.strategy == "deepspeed" and p.deepspeed_config["zero_optimization"]["stage"] >= 1
    assert "table" not in p.summary().get("memory", {})  # printed separately by orch plan
    assert any("strategy auto ->" in n for n in p.notes)


def test_plan_builds_the_memory_table_only_where_it_is_used():
    """CPU runs with a named strategy skip the meta build (orch run, sweep trials); `orch
    plan` (memory=True), `strategy: auto` and GPU workers get it."""
    from orchestrator.plan import plan

    cpu = load_spec_text("name: t\nworkload: mnist_mlp\nstrategy: ddp\n")
    assert plan(cpu).memory is None
    full = plan(cpu, memory=True).memory
    assert full["parameters"] == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    assert "table" in full
    gpu = load_spec_text("name: t\nworkload: mnist_mlp\nresources: {gpus_per_worker: 1}\n")
    assert plan(gpu).memory["parameters"] == full["parameters"]
    auto = load_spec_text("name: t\nworkload: mnist_mlp\nstrategy: auto\n")
    p = plan(auto)
    assert p.memory is not None and p.strategy == "ddp"
