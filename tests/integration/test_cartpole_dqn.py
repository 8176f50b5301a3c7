"""RLlib DQN on CartPole through `orch run`'s launcher, on the shared local Ray: a short run
learns (mean return >= 100 within 30,000 env steps; a random policy scores about 22) with
greedy evaluations every 2,000 env steps, then a rerun of the same spec resumes from its
checkpoint, keeps its env-step count and stops on its first greedy evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import ledger, rundir
from orchestrator.launch import launch
from orchestrator.plan import plan
from orchestrator.rollout import rollout
from orchestrator.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "jobs" / "cartpole_dqn.yaml"

# The shipped spec with a smaller budget: stop at a mean return of 100 over the last 20
# episodes, or at 30,000 env steps (then the assertion on the return fails). The spec's greedy
# evaluations stay on (every 2,000 env steps), with 10 episodes and no greedy stop. The
# learning knobs are the spec's before issue 24's tuning (RLlib's update rate of one update per
# sampled fragment, a target period of 500 env steps, epsilon down to 0.02): with the tuned ones
# (training_intensity 32, 200, 0.04) this module took 77 s instead of 48 s: its short run
# needed 18k env steps rather than 10-11k to a 20-episode mean of 100.
# How fast the shipped spec learns is bench/dqn_cartpole.py's figure, not a test's.
SHORT = [
    "train.training_intensity=null",
    "train.target_update_freq=500",
    "train.epsilon_end=0.02",
    "train.greedy_episodes=10",
    "train.stop_greedy_return=null",
    "train.stop_return=100",
    "train.stop_env_steps=30000",
    "train.stop_time_s=600",
    "train.return_window=20",
    "train.epsilon_steps=5000",
    "train.learning_starts=500",
    "train.eval_episodes=3",
    "checkpoint.every_steps=2000",
]


@pytest.fixture(scope="module")
def first_run(ray_local, tmp_path_factory):
    storage = tmp_path_factory.mktemp("rl") / "runs"
    spec = load_spec(SPEC, SHORT + [f"storage_path={storage}", "name=dqn-test"])
    p = plan(spec)
    assert p.kind == "rllib" and p.resumes_from is None
    summary = launch(p)
    return spec, p, summary


def test_short_run_learns_within_30k_env_steps(first_run):
    spec, p, summary = first_run
    assert summary["status"] == "SUCCEEDED", summary["error"]
    m = summary["metrics"]
    assert m["episode_return_mean"] >= 100, m
    assert m["env_steps"] <= 30_000
    assert "stop_return" in m["stop_reason"]
    assert m["eval_episodes"] == 3 and m["eval_return_mean"] > 0 and m["eval_return_std"] >= 0

    run_dir = Path(summary["run_dir"])
    assert (run_dir / "spec.resolved.yaml").exists()
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    rows = rundir.read_metrics(run_dir)
    steps = [r["step"] for r in rows]
    assert steps == sorted(steps) and steps[-1] == m["env_steps"]
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))
    # A greedy evaluation at each iteration that crossed a multiple of 2,000 env steps.
    evaluated = [r["env_steps"] for r in rows if r.get("greedy_return_mean") is not None]
    crossed = [
        b["env_steps"]
        for a, b in zip([{"env_steps": 0}] + rows, rows, strict=False)
        if b["env_steps"] // 2000 > a["env_steps"] // 2000
    ]
    assert evaluated and evaluated == crossed
    assert all(r["greedy_episodes"] == 10 for r in rows if "greedy_episodes" in r)
    # RLlib's own checkpoint, our counters and the completion marker; `keep: 2` pruned the rest.
    cks = sorted(run_dir.glob("checkpoint_*"))
    assert 1 <= len(cks) <= 2 and Path(summary["checkpoint"]) == cks[-1]
    for name in ("rllib_checkpoint.json", "state.json", "_COMPLETE", "replay_buffer.pkl"):
        assert (cks[-1] / name).exists(), name
    assert json.loads((cks[-1] / "state.json").read_text())["env_steps"] == m["env_steps"]

    events = [
        r["status"]
        for r in ledger.read_events(p.storage_path).to_pylist()
        if r["run_id"] == summary["run_id"]
    ]
    assert events == ["PENDING", "RUNNING", "SUCCEEDED"]


def test_greedy_rollout_of_the_checkpoint(first_run):
    _spec, _p, summary = first_run
    out = rollout(summary["run_dir"], episodes=3, seed=7)
    assert out["checkpoint"] == summary["checkpoint"] and out["episodes"] == 3
    assert out["env"] == "CartPole-v1" and out["env_steps"] == summary["metrics"]["env_steps"]
    assert all(r >= 1 for r in out["returns"])


def test_rerun_resumes_and_keeps_its_env_step_count(first_run):
    spec, p, summary = first_run
    done = summary["metrics"]["env_steps"]
    last_iter = summary["metrics"]["iteration"]
    # Same run name and storage: the plan picks up the latest checkpoint. A greedy stop that
    # any policy meets (a mean return of 1) ends it at its first greedy evaluation, 2,000 env
    # steps on at most; the higher budget is the fallback.
    again = load_spec(
        SPEC,
        SHORT
        + [
            f"storage_path={p.storage_path}",
            "name=dqn-test",
            "train.stop_return=null",
            "train.stop_greedy_return=1",
            f"train.stop_env_steps={done + 6000}",
        ],
    )
    p2 = plan(again)
    assert p2.resumes_from == summary["checkpoint"]
    s2 = launch(p2)
    assert s2["status"] == "SUCCEEDED", s2["error"]
    assert s2["resumed_from_step"] == done
    rows = rundir.read_metrics(s2["run_dir"])
    new = [r for r in rows if r["iteration"] > last_iter]
    # Continues the count: a fresh start would report ~1,000 env steps at its first iteration.
    assert new and new[0]["iteration"] == last_iter + 1
    assert done < new[0]["env_steps"] <= done + 2 * spec.train["steps_per_iteration"]
    assert "stop_greedy_return 1" in s2["metrics"]["stop_reason"], s2["metrics"]
    assert done < s2["metrics"]["env_steps"] <= done + 2000 + spec.train["steps_per_iteration"]
    assert new[-1]["greedy_return_mean"] >= 1 and new[-1]["greedy_episodes"] == 10
    steps = [r["step"] for r in rows]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_replay_buffer_sampling_follows_the_seed():
    """RLlib 2.60's replay buffers draw from an unseeded numpy Generator, so `seed:` alone did
    not make a run repeatable (a suite run once ended at mean return 56 where the same spec had
    reached 100 by 9k env steps). cartpole_dqn.seed_replay_buffer seeds it from (seed, env
    steps): the same pair samples the same transitions; a resumed run draws its own stream."""
    from types import SimpleNamespace

    from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer
    from ray.rllib.utils.replay_buffers.prioritized_episode_buffer import (
        PrioritizedEpisodeReplayBuffer,
    )

    from jobs import cartpole_dqn

    for cls in (EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer):
        draws = []
        for seed, env_steps in [(0, 0), (0, 0), (1, 0), (0, 2000)]:
            algo = SimpleNamespace(local_replay_buffer=cls(capacity=100))
            cartpole_dqn.seed_replay_buffer(algo, seed, env_steps)
            draws.append(algo.local_replay_buffer.rng.integers(0, 10**9, size=4).tolist())
        assert draws[0] == draws[1], cls.__name__
        assert len({tuple(d) for d in draws[1:]}) == 3, cls.__name__
