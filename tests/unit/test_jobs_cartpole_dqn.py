"""jobs/cartpole_dqn.py's `train:` arguments and pure helpers, and how orch plans, tails and
rolls out an RLlib run; no Ray, no RLlib."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import cartpole_dqn as dqn
from orchestrator import rollout, rundir
from orchestrator.errors import CheckpointError, SpecError
from orchestrator.launch.progress import rllib_line
from orchestrator.plan import plan
from orchestrator.spec import load_spec, load_spec_text

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "jobs" / "cartpole_dqn.yaml"

BASE = "name: t\nworkload: cartpole_dqn\n"


def errors_of(text: str, overrides: list[str] | None = None) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, overrides or [])
    return {e.path: e.message for e in info.value.errors}


def test_shipped_spec_is_valid_and_resolves_every_arg():
    spec = load_spec(SPEC)
    assert spec.workload == "cartpole_dqn"
    assert set(spec.train) == set(dqn.Args.model_fields)
    assert spec.train["env"] == "CartPole-v1"
    assert spec.train["stop_return"] == 450
    p = plan(spec)
    assert p.kind == "rllib"


def test_defaults_are_a_complete_config():
    a = dqn.Args()
    assert a.double_q and a.dueling and a.replay_buffer == "prioritized"
    assert a.n_max == 5


def test_every_error_at_once_with_field_paths():
    errs = errors_of(BASE + "train: {lrr: 0.1, n_step: [5, 2], gamma: 2, replay_buffer: fifo}\n")
    assert "did you mean 'lr'" in errs["train.lrr"]
    assert "lo <= hi" in errs["train.n_step"]
    assert "train.gamma" in errs
    assert "train.replay_buffer" in errs


def test_n_step_shapes():
    assert dqn.Args(n_step=3).n_max == 3
    assert dqn.Args(n_step=[1, 4]).n_max == 4
    for bad in ([1, 2, 3], [0, 2], 0, 101):
        with pytest.raises(ValueError):
            dqn.Args(n_step=bad)


def test_unknown_env_suggests_a_registered_one():
    errs = errors_of(BASE + "train: {env: CartPole-v2}\n")
    assert "did you mean 'CartPole-v1'" in errs["train.env"] or "CartPole" in errs["train.env"]


def test_cross_field_rules():
    errs = errors_of(BASE + "train: {stop_return: null, stop_env_steps: null, stop_time_s: null}\n")
    assert "at least one of stop_return" in errs["train"]
    errs = errors_of(BASE + "train: {epsilon_start: 0.1, epsilon_end: 0.5}\n")
    assert "epsilon_end" in errs["train"]
    errs = errors_of(BASE + "train: {n_step: 4, rollout_fragment_length: 2}\n")
    assert "largest n_step" in errs["train"]
    errs = errors_of(BASE + "train: {n_step: [2, 4], rollout_fragment_length: 8}\n")
    assert "int n_step" in errs["train"]


def test_data_section_is_refused():
    errs = errors_of(BASE + "data: {path: /tmp}\n")
    assert "data.path" in errs


def test_overrides_reach_the_args():
    spec = load_spec(SPEC, ["train.lr=3e-4", "train.hiddens=[64]", "train.stop_return=null"])
    assert spec.train["lr"] == pytest.approx(3e-4)
    assert spec.train["hiddens"] == [64]
    assert spec.train["stop_return"] is None


def test_epsilon_schedule_is_linear_then_flat():
    a = dqn.Args(epsilon_start=1.0, epsilon_end=0.1, epsilon_steps=1000)
    assert dqn.epsilon_at(a, 0) == 1.0
    assert dqn.epsilon_at(a, 500) == pytest.approx(0.55)
    assert dqn.epsilon_at(a, 10_000) == pytest.approx(0.1)


def fake_result(steps: int, ret: float | None, it: int = 3) -> dict:
    er = {
        "num_env_steps_sampled_lifetime": steps,
        "num_env_steps_sampled": 1000,
        "num_episodes_lifetime": 40,
        "episode_len_mean": ret,
    }
    if ret is not None:
        er.update(episode_return_mean=ret, episode_return_max=ret + 10)
    return {
        "training_iteration": it,
        "time_this_iter_s": 2.0,
        "env_runners": er,
        "learners": {"default_policy": {"qf_loss": 0.5}},
    }


def test_iteration_row_and_stop_reasons():
    a = dqn.Args(stop_return=100, stop_env_steps=5000, stop_time_s=60)
    row = dqn.iteration_row(fake_result(3000, 50.0), a, time_total_s=10)
    assert row["step"] == row["env_steps"] == 3000
    assert row["episode_return_mean"] == 50.0 and row["env_steps_per_s"] == 500.0
    assert dqn.stop_reason(a, row) is None
    assert "stop_return" in dqn.stop_reason(a, {**row, "episode_return_mean": 120.0})
    assert "stop_env_steps" in dqn.stop_reason(a, {**row, "env_steps": 5000})
    assert "stop_time_s" in dqn.stop_reason(a, {**row, "time_total_s": 61})
    # No finished episode yet: the mean return is missing, never NaN, and never stops a run.
    row = dqn.iteration_row(fake_result(500, None), a, time_total_s=1)
    assert row["episode_return_mean"] is None and dqn.stop_reason(a, row) is None


def test_a_greedy_stop_needs_greedy_evaluations():
    errs = errors_of(BASE + "train: {stop_greedy_return: 450}\n")
    assert "stop_greedy_return needs greedy_every" in errs["train"]
    errs = errors_of(BASE + "train: {greedy_every: 0, greedy_episodes: 0}\n")
    assert "train.greedy_every" in errs and "train.greedy_episodes" in errs
    # The greedy stop alone is a stop criterion.
    dqn.Args(
        stop_return=None,
        stop_env_steps=None,
        stop_time_s=None,
        stop_greedy_return=450,
        greedy_every=2000,
    )


def test_the_greedy_stop_counts_only_a_whole_evaluation():
    a = dqn.Args(stop_return=None, greedy_every=2000, greedy_episodes=100, stop_greedy_return=450)
    row = dqn.iteration_row(fake_result(4000, 200.0), a, time_total_s=10)
    assert dqn.stop_reason(a, row) is None  # no evaluation this iteration
    whole = {**row, "greedy_return_mean": 460.0, "greedy_episodes": 100}
    assert "greedy mean return 460.0 over 100 episodes" in dqn.stop_reason(a, whole)
    assert dqn.stop_reason(a, {**whole, "greedy_return_mean": 449.9}) is None
    # A screened-out evaluation (10 of 100 episodes) never stops a run, whatever its mean.
    assert dqn.stop_reason(a, {**whole, "greedy_episodes": 10}) is None
    line = rllib_line({**whole, "epsilon": 0.04})
    assert "greedy 460.0/100" in line


class ScriptedPolicy:
    """A stand-in for an RLModule: a fixed policy on a real CartPole-v1 (no RLlib needed)."""

    def __init__(self, balance: bool):
        self.balance = balance

    def forward_inference(self, batch):
        import torch

        obs = batch["obs"][0]
        push_right = bool(obs[2] + obs[3] > 0) if self.balance else False
        return {"actions": torch.tensor([int(push_right)])}


def test_greedy_check_screens_with_its_first_ten_episodes():
    good, bad = ScriptedPolicy(balance=True), ScriptedPolicy(balance=False)
    # A policy that fails the screen plays 10 episodes, not 30.
    returns = dqn.greedy_check(bad, "CartPole-v1", 30, target=450, seed=7)
    assert len(returns) == 10 and max(returns) < 50
    # One that passes plays them all; without a target there is no screen.
    assert dqn.greedy_check(good, "CartPole-v1", 30, target=450, seed=7) == [500.0] * 30
    assert len(dqn.greedy_check(bad, "CartPole-v1", 30, target=None, seed=7)) == 30
    # At most 10 episodes: exactly that many, target or not.
    assert len(dqn.greedy_check(bad, "CartPole-v1", 4, target=450, seed=7)) == 4


def test_workers_map_onto_env_runners():
    spec = load_spec(SPEC, ["resources.workers=1"])
    m = plan(spec).env_runners
    assert m.num_env_runners == 0
    spec = load_spec(SPEC, ["resources.workers=3", "resources.cpus_per_worker=0.5"])
    m = plan(spec).env_runners
    assert m.num_env_runners == 3 and m.cpus_per_env_runner == 0.5


def test_meaningless_choices_are_refused(tmp_path):
    spec = load_spec(SPEC, ["precision=bf16", "strategy=deepspeed", f"storage_path={tmp_path}"])
    with pytest.raises(SpecError) as info:
        plan(spec)
    assert set(info.value.paths) == {"precision", "strategy"}


def test_metrics_truncation_and_progress_line(tmp_path):
    rows = [
        {"step": s, "env_steps": s, "iteration": i + 1, "episode_return_mean": 20.0 + i}
        for i, s in enumerate((1000, 2000, 3000))
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{cut")
    rundir.truncate_metrics(tmp_path, 2000)
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [1000, 2000]
    line = rllib_line({**rows[0], "epsilon": 0.5, "checkpoint": "/x/checkpoint_000001"})
    assert "env steps    1,000" in line and "20.0" in line and "checkpoint_000001" in line


def test_rollout_refuses_what_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        rollout.resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        rollout.resolve_checkpoint(tmp_path)
    for name in ("checkpoint_000002", "checkpoint_000010", "checkpoint_000011"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint_000002" / "_COMPLETE").write_text("")
    (tmp_path / "checkpoint_000010" / "_COMPLETE").write_text("")
    # 000011 is half-written (no marker): never chosen.
    assert rollout.resolve_checkpoint(tmp_path).name == "checkpoint_000010"


def test_mean_return_covers_the_last_window_of_episodes():
    # RLlib 2.60 reports each iteration's own episodes only; the loop keeps the window.
    hist: list[list[float]] = []
    for mean, n in ((20.0, 50), (100.0, 30), (400.0, 5), (500.0, 2)):
        dqn.push_returns(hist, {"episode_return_mean_iter": mean, "episodes_iter": n}, window=10)
    # last 10 episodes: 2 x 500, 5 x 400, 3 of the 30 at 100
    assert dqn.smoothed_return(hist, 10) == pytest.approx((2 * 500 + 5 * 400 + 3 * 100) / 10)
    assert [m for m, _ in hist] == [100.0, 400.0, 500.0]  # the 50 at 20.0 no longer count
    dqn.push_returns(hist, {"episode_return_mean_iter": None, "episodes_iter": 0}, window=10)
    assert len(hist) == 3
    assert dqn.smoothed_return([], 10) is None


def test_learning_curve_shows_the_greedy_evaluations(tmp_path):
    from orchestrator.launch.rllib import CURVE_FILE, plot_learning_curve

    for i, (ret, greedy, n) in enumerate([(None, 9.5, 10), (80.0, None, None), (200.0, 470, 100)]):
        row = {"env_steps": 1000 * (i + 1), "episode_return_mean": ret}
        if greedy is not None:
            row.update(greedy_return_mean=greedy, greedy_episodes=n)
        rundir.append_metrics(tmp_path, row)
    out = plot_learning_curve(tmp_path, 450, (3000, 500.0, 0.0))
    assert out is not None and (tmp_path / CURVE_FILE).stat().st_size > 1000
    # No training mean yet but greedy evaluations: still a plot.
    other = tmp_path / "other"
    other.mkdir()
    rundir.append_metrics(
        other, {"env_steps": 2000, "greedy_return_mean": 9.0, "greedy_episodes": 10}
    )
    assert plot_learning_curve(other) is not None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert plot_learning_curve(empty) is None
