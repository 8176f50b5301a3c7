"""Strategies on real local Ray, 2 CPU workers (gloo): FSDP2 and DeepSpeed ZeRO-1/2/3 in fp32
and bf16, resume of FSDP and ZeRO-3 runs, ZeRO-3 sharding, and the memory planner against
the installed DeepSpeed's own estimators.

    pytest -q tests/integration/test_strategies.py
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest

from orchestrator import memory
from orchestrator.memory import GiB

MATRIX = [
    ("fsdp", None, "fp32"),
    ("fsdp", None, "bf16"),
    ("deepspeed", 1, "fp32"),
    ("deepspeed", 1, "bf16"),
    ("deepspeed", 2, "fp32"),
    ("deepspeed", 2, "bf16"),
    ("deepspeed", 3, "fp32"),
    ("deepspeed", 3, "bf16"),
]
STEPS = 16


def _matrix_loop(config: dict) -> None:
    """Runs inside each Ray Train worker: every (strategy, precision) in turn, through the
    same Session the workloads use, on the MNIST MLP; writes losses and ZeRO-3 shard sizes."""
    import torch
    import torch.nn.functional as F

    from jobs import mnist_mlp
    from orchestrator import worker

    xtr, ytr, _, _ = mnist_mlp.load_mnist(mnist_mlp.DataArgs())
    results = []
    for kind, stage, precision in config["matrix"]:
        sess = worker.setup(
            {
                "strategy": kind,
                "precision": precision,
                "seed": 0,
                "deepspeed": {"stage": stage},
                "train": {"batch_size": 32},
            }
        )
        args = mnist_mlp.Args(batch_size=32, optimizer="adam", lr=2e-3)
        model, _, _ = sess.prepare(mnist_mlp.build_model(args), args, STEPS)
        row = {
            "kind": kind,
            "stage": stage,
            "precision": precision,
            "rank": sess.rank,
            "losses": [],
        }
        if stage == 3:
            params = list(sess.engine.module.parameters())
            row["local"] = sum(p.ds_tensor.numel() for p in params)
            row["total"] = sum(p.ds_numel for p in params)
        for i in range(STEPS):
            lo = (i * sess.world_size + sess.rank) * 32  # disjoint batches per rank
            x, y = torch.from_numpy(xtr[lo : lo + 32]), torch.from_numpy(ytr[lo : lo + 32])
            with sess.autocast():
                loss = F.cross_entropy(model(x), y)
            sess.backward(loss)
            row["losses"].append(float(loss))
        results.append(row)
    Path(config["out"], f"rank{results[0]['rank']}.json").write_text(json.dumps(results))


def test_loss_falls_under_fsdp_and_zero123_in_fp32_and_bf16(ray_local, tmp_path):
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not installed
    trainer = TorchTrainer(
        _matrix_loop,
        train_loop_config={"matrix": MATRIX, "out": str(tmp_path)},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="matrix", storage_path=str(tmp_path / "ray")),
    )
    result = trainer.fit()
    assert result.error is None, result.error
    rows = [r for rank in (0, 1) for r in json.loads((tmp_path / f"rank{rank}.json").read_text())]
    assert len(rows) == 2 * len(MATRIX)
    for r in rows:
        first, last = sum(r["losses"][:3]) / 3, sum(r["losses"][-3:]) / 3
        assert last < 0.75 * first, (r["kind"], r["stage"], r["precision"], r["losses"])
    # ZeRO-3: each rank holds about half of every parameter; together, all of them.
    for precision in ("fp32", "bf16"):
        z3 = [r for r in rows if r["stage"] == 3 and r["precision"] == precision]
        assert len(z3) == 2
        for r in z3:
            assert 0.45 <= r["local"] / r["total"] <= 0.56, r
        assert 1.0 <= sum(r["local"] for r in z3) / z3[0]["total"] <= 1.02


def _spec(tmp_runs, strategy: str, max_steps: int, extra: list[str]):
    from orchestrator.spec import load_spec

    root = Path(__file__).resolve().parents[2]
    return load_spec(
        root / "jobs" / "mnist_mlp.yaml",
        [
            f"strategy={strategy}",
            "resources.workers=2",
            f"storage_path={tmp_runs}",
            f"name=resume-{strategy}",
            f"train.max_steps={max_steps}",
            "train.batch_size=32",
            "train.log_every=2",
            "checkpoint.every_steps=5",
            *extra,
        ],
    )


@pytest.mark.parametrize(
    "strategy, extra, fmt",
    [
        ("fsdp", [], "dcp"),
        ("deepspeed", ["deepspeed.stage=3"], "deepspeed"),
    ],
)
def test_resume_continues_the_loss_curve(ray_local, tmp_runs, strategy, extra, fmt):
    from rich.console import Console

    from orchestrator.launch import launch
    from orchestrator.plan import plan
    from orchestrator.rundir import read_metrics

    quiet = Console(quiet=True)
    first = launch(plan(_spec(tmp_runs, strategy, 10, extra)), console=quiet)
    assert first["status"] == "SUCCEEDED", first["error"]
    run_dir = Path(first["run_dir"])
    ck = run_dir / "checkpoint_000010"
    state = json.loads((ck / "state.json").read_text())
    assert state["format"] == fmt and state["optimizer_steps"] == 10
    if fmt == "dcp":  # each rank wrote its own shard; Ray merged the directories
        assert sorted(p.name for p in (ck / "dcp").iterdir()) == [
            ".metadata",
            "__0_0.distcp",
            "__1_0.distcp",
        ]
    else:
        shards = sorted(p.name for p in (ck / "deepspeed" / ck.name).glob("*zero_pp_rank_*optim*"))
        assert len(shards) == 2, shards
    before = read_metrics(run_dir)
    first_losses = [r["loss"] for r in before if "loss" in r]

    p2 = plan(_spec(tmp_runs, strategy, 20, extra))
    assert p2.resumes_from and p2.resumes_from.endswith("checkpoint_000010")
    second = launch(p2, console=quiet)
    assert second["status"] == "SUCCEEDED", second["error"]
    assert second["resumed_from_step"] == 10
    rows = read_metrics(run_dir)
    after = [r for r in rows if r.get("step", 0) > 10 and "loss" in r]
    assert after, rows
    # Continues where it stopped: near the last loss before the stop and well below the
    # untrained loss (a fresh start would log ~2.2 again at its first steps).
    assert after[0]["loss"] < 0.8 * first_losses[0], (first_losses, after)
    assert after[0]["loss"] < 1.2 * first_losses[-1], (first_losses, after)
    final = json.loads((run_dir / "checkpoint_000020" / "state.json").read_text())
    assert final["optimizer_steps"] == 20


# --- the planner against DeepSpeed's own estimators --------------------------------------------


def _printed_gib(text: str) -> list[float]:
    """Per-GPU GiB column of an estimator's printed table, in print order."""
    return [
        float(m.group(2)) for m in re.finditer(r"^\s*([\d.]+)GB \|\s*([\d.]+)GB \|", text, re.M)
    ]


@pytest.mark.parametrize(
    "psi, largest, gpus",
    [
        (2_851_598_336, 32_899_072, 8),  # t5-3b
        (2_851_598_336, 32_899_072, 64),
        (124_439_808, 38_597_376, 2),  # gpt2-small-sized
        (1_300_000_000, 102_957_056, 4),
        (6_738_415_616, 131_072_000, 16),  # llama-7b-sized
    ],
)
def test_planner_matches_deepspeed_estimators(psi, largest, gpus):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_cold

    z2 = _printed_gib(
        memory.capture_stdout(
            estimate_zero2_model_states_mem_needs_all_cold, psi, num_gpus_per_node=gpus
        )
    )
    z3 = _printed_gib(
        memory.capture_stdout(
            estimate_zero3_model_states_mem_needs_all_cold, psi, largest, num_gpus_per_node=gpus
        )
    )
    assert len(z2) == 2 and len(z3) == 6
    # print order: zero2 [offload, none]; zero3 [param+opt offload x2, opt offload x2, none x2]
    want = {
        "zero2_offload_opt": z2[0],
        "zero2": z2[1],
        "zero3_offload_all": z3[0],
        "zero3_offload_opt": z3[2],
        "zero3": z3[4],
    }
    count = memory.ParamCount(psi, psi, largest)
    rows = memory.estimate(count, gpus, "bf16", "adamw")
    for option, ds_gib in want.items():
        ours = rows[option]["deepspeed_estimator"] / GiB
        assert ours == pytest.approx(ds_gib, rel=0.05, abs=0.01), option
        if option == "zero2_offload_opt" or option.startswith("zero3_offload"):
            # where nothing but weights stay on the GPU the engine figure is the same count
            assert rows[option]["model_states"] / GiB == pytest.approx(ds_gib, rel=0.05, abs=0.01)


def test_t5_3b_plan_on_8_gpus():
    """A t5-3b-sized T5 (d_model 1024, d_ff 16384, 24+24 layers, 32 heads of 128, vocabulary
    32128, tied embeddings) from the T5 workload's own config builder, built on meta."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_cold
    from transformers import T5ForConditionalGeneration

    from jobs import t5_translation
    from orchestrator.spec import JobSpec

    train = {
        "d_model": 1024,
        "d_ff": 16384,
        "num_layers": 24,
        "num_decoder_layers": 24,
        "num_heads": 32,
        "d_kv": 128,
        "batch_size": 4,
        "max_source_len": 512,
        "max_target_len": 512,
    }
    wl = types.SimpleNamespace(
        Args=t5_translation.Args,
        build_model=lambda a: T5ForConditionalGeneration(t5_translation.t5_config(a, 32128)),
        activation_shape=lambda a: {
            "batch": a.batch_size,
            "seq": a.max_source_len,
            "hidden": a.d_model,
            "layers": 48,
            "heads": a.num_heads,
            "vocab": 32128,
        },
    )
    spec = JobSpec.model_validate(
        {
            "name": "t5-3b",
            "workload": "t5_translation",
            "strategy": "auto",
            "precision": "bf16",
            "train": train,
            "resources": {"workers": 8, "gpus_per_worker": 1, "gpu_memory_gb": 40},
        }
    )
    mem, strategy, why = memory.plan_memory(spec, wl)
    assert mem["parameters"] == 2_851_598_336
    assert mem["largest_layer_parameters"] == 32128 * 1024
    z2 = _printed_gib(
        memory.capture_stdout(
            estimate_zero2_model_states_mem_needs_all_cold, mem["parameters"], num_gpus_per_node=8
        )
    )
    z3 = _printed_gib(
        memory.capture_stdout(
            estimate_zero3_model_states_mem_needs_all_cold,
            mem["parameters"],
            mem["largest_layer_parameters"],
            num_gpus_per_node=8,
        )
    )
    assert (z2[1], z2[0], z3[4], z3[2], z3[0]) == (11.29, 5.31, 6.10, 0.79, 0.12)  # DS 0.19
    count = memory.ParamCount(
        mem["parameters"], mem["trainable_parameters"], mem["largest_layer_parameters"]
    )
    rows = memory.estimate(count, 8, "bf16", "adamw")
    assert rows["zero2"]["deepspeed_estimator"] / GiB == pytest.approx(z2[1], rel=0.05)
    assert rows["zero3"]["deepspeed_estimator"] / GiB == pytest.approx(z3[4], rel=0.05)
    assert "ZeRO-2" in mem["table"] and "11.29" in mem["table"] and "6.10" in mem["table"]
    # 16Ψ = 42.5 GiB does not fit 80% of 40 GiB: auto goes to a ZeRO stage and says why.
    assert strategy == "deepspeed" and "strategy auto -> ZeRO-" in why
