"""orchestrator.worker.deepspeed_config: spec -> DeepSpeed config, merged with the user's JSON."""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import SpecError
from orchestrator.spec import load_spec_text
from orchestrator.worker import deepspeed_config

BASE = """
name: t
workload: mnist_mlp
strategy: deepspeed
resources: {workers: 2}
train: {batch_size: 16}
"""


def spec(extra: str = "", overrides=None):
    return load_spec_text(BASE + extra, overrides or [])


def test_defaults_map_spec_fields():
    cfg = deepspeed_config.build(spec())
    assert cfg["zero_optimization"] == {"stage": 2}
    assert cfg["train_micro_batch_size_per_gpu"] == 16
    assert cfg["gradient_accumulation_steps"] == 1
    assert cfg["train_batch_size"] == 32  # 16 x 1 x 2 workers
    assert cfg["gradient_clipping"] == 0.0
    assert cfg["bf16"] == {"enabled": False} and cfg["fp16"]["enabled"] is False
    assert "optimizer" not in cfg and "scheduler" not in cfg


def test_stage_offload_precision_accum_clip():
    s = spec(
        overrides=[
            "deepspeed.stage=3",
            "deepspeed.offload_optimizer=cpu",
            "deepspeed.offload_param=cpu",
            "precision=bf16",
            "train.grad_accum=4",
            "train.grad_clip=1.5",
        ]
    )
    cfg = deepspeed_config.build(s)
    z = cfg["zero_optimization"]
    assert z["stage"] == 3
    assert z["offload_optimizer"] == {"device": "cpu"} and z["offload_param"] == {"device": "cpu"}
    assert cfg["bf16"]["enabled"] is True
    assert cfg["gradient_accumulation_steps"] == 4 and cfg["train_batch_size"] == 16 * 4 * 2
    assert cfg["gradient_clipping"] == 1.5
    assert cfg["zero_force_ds_cpu_optimizer"] is False  # we pass a torch optimizer


def test_config_file_merges_and_fills_unset_fields(tmp_path):
    f = tmp_path / "ds.json"
    f.write_text(
        json.dumps(
            {
                "zero_optimization": {
                    "stage": 3,
                    "overlap_comm": True,
                    "reduce_bucket_size": 1000,
                    "offload_optimizer": {"device": "cpu", "pin_memory": True},
                },
                "steps_per_print": 7,
                "communication_data_type": "fp32",
            }
        )
    )
    cfg = deepspeed_config.build(spec(overrides=[f"deepspeed.config_file={f}"]))
    z = cfg["zero_optimization"]
    assert z["stage"] == 3  # from the file: the spec left stage unset
    assert z["overlap_comm"] is True and z["reduce_bucket_size"] == 1000
    assert z["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert cfg["steps_per_print"] == 7 and cfg["communication_data_type"] == "fp32"


def test_conflict_names_both_places(tmp_path):
    f = tmp_path / "ds.json"
    f.write_text(
        json.dumps(
            {
                "zero_optimization": {"stage": 3},
                "bf16": {"enabled": True},
                "gradient_accumulation_steps": 8,
            }
        )
    )
    with pytest.raises(SpecError) as err:
        deepspeed_config.build(spec(overrides=[f"deepspeed.config_file={f}", "deepspeed.stage=1"]))
    text = str(err.value)
    assert set(err.value.paths) >= {"deepspeed.stage", "precision", "train.grad_accum"}
    assert "deepspeed.config_file" in text and str(f) in text
    assert "zero_optimization.stage: 3" in text and "bf16.enabled" in text


def test_agreeing_values_are_fine(tmp_path):
    f = tmp_path / "ds.json"
    f.write_text(
        json.dumps(
            {
                "zero_optimization": {"stage": 1},
                "gradient_accumulation_steps": 1,
                "train_batch_size": 32,
                "gradient_clipping": 0,
            }
        )
    )
    cfg = deepspeed_config.build(
        spec(overrides=[f"deepspeed.config_file={f}", "deepspeed.stage=1"])
    )
    assert cfg["zero_optimization"]["stage"] == 1


@pytest.mark.parametrize(
    "content, needle",
    [
        ({"optimizer": {"type": "Adam"}}, "remove the 'optimizer' section"),
        ({"scheduler": {"type": "WarmupLR"}}, "remove the 'scheduler' section"),
        ({"train_batch_size": 999}, "train_batch_size: 999"),
        ({"zero_optimization": {"stage": 7}}, "expected 0, 1, 2 or 3"),
        ({"zero_optimization": {"offload_param": {"device": "cpu"}}}, "needs ZeRO stage 3"),
        ({"gradient_clipping": 2.0}, "gradient_clipping: 2.0"),
    ],
)
def test_bad_files(tmp_path, content, needle):
    f = tmp_path / "ds.json"
    f.write_text(json.dumps(content))
    with pytest.raises(SpecError, match=needle):
        deepspeed_config.build(spec(overrides=[f"deepspeed.config_file={f}"]))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        deepspeed_config.build(spec(overrides=[f"deepspeed.config_file={tmp_path}/nope.json"]))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        deepspeed_config.build(spec(overrides=[f"deepspeed.config_file={bad}"]))
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(SpecError, match="JSON object"):
        deepspeed_config.build(spec(overrides=[f"deepspeed.config_file={arr}"]))


def test_spec_refuses_param_offload_below_stage3():
    with pytest.raises(SpecError, match="needs stage: 3"):
        spec(overrides=["deepspeed.stage=2", "deepspeed.offload_param=cpu"])


def test_fp16_refused_without_gpu():
    with pytest.raises(SpecError, match="needs a GPU"):
        spec(overrides=["precision=fp16"])
