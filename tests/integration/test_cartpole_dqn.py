"""RLlib DQN on CartPole through `orch run`'s launcher, on the shared local Ray: a short run
learns (mean return >= 100 within 30,000 env steps; a random policy scores about 22), then a
rerun of the same spec resumes from its checkpoint and keeps its env-step count."""

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
# episodes, or at 30,000 env steps (then the assertion on the return fails).
SHORT = [
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
    # Same run name and storage: the plan picks up the latest checkpoint. A higher budget
    # lets it train on for two more iterations.
    again = load_spec(
        SPEC,
        SHORT
        + [
            f"storage_path={p.storage_path}",
            "name=dqn-test",
            "train.stop_return=null",
            f"train.stop_env_steps={done + 2000}",
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
    assert s2["metrics"]["env_steps"] >= done + 2000
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
