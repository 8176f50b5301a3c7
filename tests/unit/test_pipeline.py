"""strategy: pipeline without Ray: cutting models into stages, the bubble, the spec's checks
(each bad input named, exit 2), `orch plan`'s stage table, the refusal to resume with another
stage count, and one step of a 2-stage pipeline in two gloo processes against the same step on
the whole model (orchestrator/worker/pipeline.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import CheckpointError, ExitCode, SpecError
from orchestrator.worker import pipeline

ROOT = Path(__file__).resolve().parents[2]
MNIST = str(ROOT / "jobs/mnist_mlp.yaml")


def _validate(*overrides: str, spec: str = MNIST):
    return CliRunner().invoke(app, ["validate", spec, *overrides])


# -- cutting --------------------------------------------------------------------------------


def test_split_balances_parameters_and_keeps_activations_with_their_layer():
    # 784-512-256-10: Linear, ReLU, Linear, ReLU, Linear
    sizes = [401_920, 0, 131_328, 0, 2_570]
    names = ["0", "1", "2", "3", "4"]
    assert pipeline.split(sizes, names, 2) == [(0, 2), (2, 5)]
    assert pipeline.split(sizes, names, 3) == [(0, 2), (2, 4), (4, 5)]
    assert pipeline.split([1, 1, 1, 1], list("abcd"), 2) == [(0, 2), (2, 4)]
    assert pipeline.split([10, 1, 1, 1, 1], list("abcde"), 2) == [(0, 1), (1, 5)]


def test_split_at_named_points_and_every_way_it_cannot():
    sizes, names = [5, 0, 5, 0, 5], ["stem", "act", "mid", "act2", "head"]
    assert pipeline.split(sizes, names, 2, ["mid"]) == [(0, 2), (2, 5)]
    with pytest.raises(pipeline.SplitError, match="only 3 of its 5 blocks"):
        pipeline.split(sizes, names, 4)
    with pytest.raises(pipeline.SplitError, match="no block named nope"):
        pipeline.split(sizes, names, 2, ["nope"])
    with pytest.raises(pipeline.SplitError, match="2 parts need 1"):
        pipeline.split(sizes, names, 2, ["mid", "head"])
    with pytest.raises(pipeline.SplitError, match="named in model order"):
        pipeline.split(sizes, names, 3, ["head", "mid"])
    with pytest.raises(pipeline.SplitError, match="without parameters"):
        pipeline.split(sizes, names, 3, ["act", "mid"])


def test_bubble_fraction_and_layout():
    assert pipeline.bubble_fraction(2, 1) == pytest.approx(0.5)
    assert pipeline.bubble_fraction(2, 4) == pytest.approx(1 / 5)
    assert pipeline.bubble_fraction(4, 8) == pytest.approx(3 / 11)
    assert pipeline.bubble_fraction(2, 4, "interleaved") == pytest.approx(1 / 9)
    lay = pipeline.Layout(stages=2, replicas=2)
    assert [lay.stage_of(r) for r in range(4)] == [0, 1, 0, 1]
    assert lay.replica_ranks(1) == [2, 3]
    assert lay.stage_ranks(1) == [1, 3]


# -- the spec -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        (["pipeline.stages=4"], "pipeline.stages", "at most resources.workers=2"),
        (["resources.workers=3"], "resources.workers", "multiple of pipeline.stages=2"),
        (["pipeline.microbatches=1"], "pipeline.microbatches", "at least pipeline.stages=2"),
        (["train.grad_accum=2"], "train.grad_accum", "microbatches accumulate"),
        (["precision=bf16"], "precision", "fp32"),
        (["pipeline.schedule=interleaved"], "pipeline.stages", "2 chunks = 4 parts"),
        (
            ["resources.workers=3", "pipeline.stages=3", "pipeline.split_points=['1','2']"],
            "pipeline.split_points",
            "without parameters",
        ),
    ],
)
def test_bad_pipeline_input_is_named_with_exit_2(overrides, field, words):
    res = _validate("strategy=pipeline", *overrides)
    assert res.exit_code == ExitCode.BAD_INPUT == 2, res.output
    text = " ".join(res.output.split())
    assert f"- {field}: " in res.output, res.output
    assert words in text, text


def test_a_workload_without_split_points_and_t5_are_refused(tmp_path):
    (tmp_path / "branchy.py").write_text(
        textwrap.dedent(
            """
            import torch.nn as nn
            from orchestrator import worker

            class Args(worker.OptimArgs):
                batch_size: int = 8

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)
                def forward(self, x):
                    return self.b(self.a(x) + x)

            def build_model(args):
                return Net()

            def train_loop(config):
                pass
            """
        )
    )
    spec = tmp_path / "branchy.yaml"
    spec.write_text("name: b\nworkload: branchy\nresources: {workers: 2}\nstrategy: pipeline\n")
    res = _validate(spec=str(spec))
    assert res.exit_code == 2, res.output
    assert "- strategy: " in res.output and "declares no split points" in res.output
    assert "pipeline_blocks" in " ".join(res.output.split())

    t5 = _validate("strategy=pipeline", spec=str(ROOT / "jobs/t5_translation.yaml"))
    assert t5.exit_code == 2, t5.output
    assert "encoder-decoder" in t5.output or "orchestrator[nlp]" in t5.output


def test_a_valid_pipeline_spec_and_hashes_of_other_strategies_unchanged():
    from orchestrator.spec import load_spec

    res = _validate("strategy=pipeline", "resources.workers=4")
    assert res.exit_code == 0, res.output
    ddp = load_spec(MNIST)
    same = load_spec(MNIST, ["pipeline.stages=3"])  # ignored unless strategy: pipeline
    assert ddp.spec_hash() == same.spec_hash()
    pp = load_spec(MNIST, ["strategy=pipeline"])
    assert (
        pp.spec_hash()
        != load_spec(MNIST, ["strategy=pipeline", "pipeline.microbatches=8"]).spec_hash()
    )
    with pytest.raises(SpecError):
        load_spec(MNIST, ["strategy=pipeline", "pipeline.stages=1"])


# -- orch plan ------------------------------------------------------------------------------


def test_orch_plan_prints_each_stage_and_the_bubble(tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "plan",
            MNIST,
            "strategy=pipeline",
            "pipeline.stages=2",
            "pipeline.microbatches=4",
            f"storage_path={tmp_path}",
        ],
    )
    assert res.exit_code == 0, res.output
    out = res.output
    assert "bubble: 20.0% of each step idle, (S-1)/(M+S-1) = 1/5" in out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln[:2] in ("0 ", "1 ")}
    # stage 0: Linear(784, 512) + ReLU; stage 1: the rest
    assert lines["0"][1:3] == ["0,1", "401,920"], out
    assert lines["1"][1:3] == ["2,3,4", "133,898"], out
    plan_yaml = yaml.safe_load(out.split("pipeline: 2 stages")[0].split("memory per device")[0])
    per_stage = plan_yaml["pipeline"]["per_stage"]
    assert [s["parameters"] for s in per_stage] == [401_920, 133_898]
    # 1F1B: stage 0 holds S - 0 = 2 microbatches' activations at once, stage 1 one.
    assert [s["microbatches_in_flight"] for s in per_stage] == [2, 1]
    assert plan_yaml["pipeline"]["bubble_fraction"] == 0.2
    assert plan_yaml["strategy"] == "pipeline"


def test_plan_refuses_to_resume_with_another_stage_count(tmp_path):
    from orchestrator.plan import check_same_model
    from orchestrator.spec import dump_yaml, load_spec

    run_dir = tmp_path / "pp"
    run_dir.mkdir()
    old = load_spec(MNIST, ["strategy=pipeline"])
    (run_dir / "spec.resolved.yaml").write_text(dump_yaml(old))
    check_same_model(
        load_spec(MNIST, ["strategy=pipeline", "pipeline.schedule=gpipe"]), str(run_dir)
    )
    new = load_spec(MNIST, ["strategy=pipeline", "resources.workers=3", "pipeline.stages=3"])
    with pytest.raises(CheckpointError, match=r"stages: 2 -> 3.*pipeline.stages=2"):
        check_same_model(new, str(run_dir))


def test_workers_refuse_a_checkpoint_of_another_stage_count(tmp_path):
    from types import SimpleNamespace

    from orchestrator.worker import checkpoint

    sess = SimpleNamespace(
        pipeline=SimpleNamespace(
            layout=pipeline.Layout(stages=3, replicas=1), n_chunks=3, schedule_name="gpipe"
        )
    )
    state = {"pipeline": {"stages": 2, "chunks": 2, "replicas": 1, "schedule": "1f1b"}}
    with pytest.raises(CheckpointError, match=r"2-stage pipeline.*pipeline.stages=3.*stages=2"):
        checkpoint._load_pipeline(sess, tmp_path, state)
