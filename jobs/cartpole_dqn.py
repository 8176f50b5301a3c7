"""DQN on gymnasium's CartPole-v1 through RLlib (new API stack): double + dueling Q,
prioritized n-step replay, epsilon-greedy exploration.

    # alone: local Ray, stops at mean return 450
    python jobs/cartpole_dqn.py
    python jobs/cartpole_dqn.py --stop-return 100 --stop-env-steps 30000 --run-dir /tmp/dqn
    orch run jobs/cartpole_dqn.yaml                      # through orch: ledger, run dir, resume
    orch run jobs/cartpole_dqn.yaml train.lr=1e-3 resources.workers=2
    # greedy episodes from the latest checkpoint
    orch rollout runs/cartpole-dqn --episodes 20

`train_loop(config)` builds the RLlib `DQNConfig` from `Args` (`build_config`), trains until a
stop criterion holds (mean return, env steps, wall time), saves RLlib's own checkpoints
(`Algorithm.save_to_path`) as `checkpoint_NNNNNN/` in the run directory, appends one row per
training iteration to `metrics.jsonl`, and finishes with greedy evaluation episodes.

"Mean return" is the mean undiscounted return of the last `return_window` training episodes
(epsilon-greedy, as in RLlib's own CartPole example, which stops at 450), built from RLlib's
per-iteration `env_runners/episode_return_mean` (see `smoothed_return`). The greedy evaluation
at the end is reported beside it. With `greedy_every`, the greedy policy is also evaluated during
training (`greedy_check`: `greedy_episodes` argmax-Q episodes, the first 10 screening), and
`stop_greedy_return` stops the run at the first whole evaluation that reaches it, which is how
the shipped spec stops. The `step` of every metrics row, checkpoint and resume is the lifetime
env-step count, so a resumed run keeps it.

Workers: the driver process holds the Learner (and the replay buffer). `num_env_runners: 0`
samples in the driver too, which is the cheapest on a small machine; N > 0 starts N remote
EnvRunner actors (orch maps `resources.workers` onto this, see docs/rl.md).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator import rundir

KIND = "rllib"  # orch run launches it through orchestrator/launch/rllib.py, not Ray Train
EXTRAS = ("rl",)  # RLlib + gymnasium: pip install 'orchestrator[rl]' (orchestrator/extras.py)
# Changing these changes the network, so a checkpoint cannot be resumed with them changed.
SHAPE_KEYS = ("env", "hiddens", "head_hiddens", "activation", "dueling")

STATE_FILE = "state.json"  # our counters beside RLlib's own checkpoint files
BUFFER_FILE = "replay_buffer.pkl"
MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / "default_policy"


class Args(BaseModel):
    """The `train:` section of a cartpole_dqn spec. Every field maps onto one DQNConfig knob."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field("CartPole-v1", description="A registered gymnasium env with discrete actions.")
    # --- optimisation
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")
    gamma: float = Field(0.99, gt=0, le=1, description="Discount factor.")
    train_batch_size: int = Field(64, ge=1, le=65_536, description="Transitions per SGD update.")
    grad_clip: float | None = Field(40.0, gt=0, description="Clip the global gradient norm.")
    training_intensity: float | None = Field(
        None,
        gt=0,
        le=10_000,
        description="Replayed / sampled transitions; None: one update per rollout fragment.",
    )
    # --- replay
    replay_buffer: Literal["prioritized", "uniform"] = Field(
        "prioritized", description="PrioritizedEpisodeReplayBuffer or EpisodeReplayBuffer."
    )
    buffer_capacity: int = Field(
        50_000, ge=100, le=10**8, description="Replay buffer size (steps)."
    )
    prioritized_alpha: float = Field(0.6, ge=0, le=1, description="Priority exponent.")
    prioritized_beta: float = Field(0.4, ge=0, le=1, description="Importance-sampling exponent.")
    learning_starts: int = Field(
        1000, ge=0, le=10**9, description="Env steps before the first update."
    )
    n_step: int | list[int] = Field(
        [2, 5], description="N-step returns: an int, or [lo, hi] drawn per batch."
    )
    checkpoint_replay_buffer: bool = Field(
        True, description="Save the replay buffer in checkpoints so a resume keeps its experience."
    )
    # --- Q-network
    double_q: bool = Field(True, description="Double Q-learning.")
    dueling: bool = Field(True, description="Dueling value/advantage heads.")
    hiddens: list[int] = Field([256], min_length=1, max_length=8, description="Encoder layers.")
    head_hiddens: list[int] = Field([256], max_length=8, description="Q-head layers.")
    activation: Literal["tanh", "relu"] = Field("tanh", description="Encoder activation.")
    target_update_freq: int = Field(
        500, ge=1, le=10**9, description="Env steps between target-network updates."
    )
    tau: float = Field(1.0, gt=0, le=1, description="Target update mix; 1.0 copies the weights.")
    # --- exploration
    epsilon_start: float = Field(1.0, ge=0, le=1, description="Epsilon at env step 0.")
    epsilon_end: float = Field(0.02, ge=0, le=1, description="Epsilon after epsilon_steps.")
    epsilon_steps: int = Field(
        10_000, ge=1, le=10**9, description="Linear decay length (env steps)."
    )
    # --- sampling and reporting
    envs_per_runner: int = Field(1, ge=1, le=1024, description="Vectorized envs per EnvRunner.")
    rollout_fragment_length: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Steps per env per sample call; None: the largest n_step.",
    )
    steps_per_iteration: int = Field(
        1000, ge=1, le=10**7, description="Env steps per training iteration (one metrics row)."
    )
    return_window: int = Field(
        100, ge=1, le=10_000, description="Episodes in the mean return (RLlib's smoothing window)."
    )
    # --- stop criteria (any one that holds stops the run)
    stop_return: float | None = Field(450.0, description="Stop when the mean return reaches this.")
    stop_env_steps: int | None = Field(200_000, ge=1, description="Stop after this many env steps.")
    stop_time_s: float | None = Field(
        3600.0, gt=0, description="Stop after this much training time (summed over resumes)."
    )
    stop_greedy_return: float | None = Field(
        None, description="Stop when a greedy evaluation's mean return reaches this."
    )
    # --- evaluation
    greedy_every: int | None = Field(
        None,
        ge=1,
        le=10**9,
        description="Env steps between greedy evaluations during training (None: none).",
    )
    greedy_episodes: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Greedy episodes per evaluation during training (over 10: the first 10 "
        "screen).",
    )
    eval_episodes: int = Field(10, ge=0, le=10_000, description="Greedy episodes after training.")

    @field_validator("n_step")
    @classmethod
    def _n_step_range(cls, v: int | list[int]) -> int | list[int]:
        lo, hi = (v, v) if isinstance(v, int) else (v + [0, 0])[:2]
        if isinstance(v, list) and len(v) != 2:
            raise ValueError(f"expected an int or a [lo, hi] pair, given {len(v)} values")
        if not (1 <= lo <= hi <= 100):
            raise ValueError("expected 1 <= lo <= hi <= 100")
        return v

    @field_validator("hiddens", "head_hiddens")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 or w > 65_536 for w in v):
            raise ValueError("expected layer widths between 1 and 65536")
        return v

    @field_validator("env")
    @classmethod
    def _registered_env(cls, v: str) -> str:
        import gymnasium as gym

        if v not in gym.envs.registry:
            import difflib

            guess = difflib.get_close_matches(v, list(gym.envs.registry), n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else ""
            raise ValueError(f"not a registered gymnasium env{hint}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Args:
        stops = (self.stop_return, self.stop_env_steps, self.stop_time_s, self.stop_greedy_return)
        if all(x is None for x in stops):
            raise ValueError(
                "set at least one of stop_return, stop_env_steps, stop_time_s, stop_greedy_return"
            )
        if self.stop_greedy_return is not None and self.greedy_every is None:
            raise ValueError(
                "stop_greedy_return needs greedy_every (env steps between greedy evaluations), "
                "e.g. greedy_every: 2000"
            )
        if self.epsilon_end > self.epsilon_start:
            raise ValueError(
                f"epsilon_end ({self.epsilon_end}) must not exceed epsilon_start "
                f"({self.epsilon_start})"
            )
        if self.rollout_fragment_length is not None and isinstance(self.n_step, list):
            # RLlib 2.60's DQNConfig.validate compares the two and fails on a range.
            raise ValueError("rollout_fragment_length needs an int n_step (not a [lo, hi] range)")
        if self.rollout_fragment_length is not None and self.rollout_fragment_length < self.n_max:
            raise ValueError(
                f"rollout_fragment_length ({self.rollout_fragment_length}) must be >= the "
                f"largest n_step ({self.n_max})"
            )
        return self

    @property
    def n_max(self) -> int:
        return self.n_step if isinstance(self.n_step, int) else self.n_step[1]


class DataArgs(BaseModel):
    """CartPole needs no data; an empty model makes any `data:` key an error."""

    model_config = ConfigDict(extra="forbid")


def epsilon_at(args: Args, env_steps: int) -> float:
    frac = min(1.0, env_steps / args.epsilon_steps)
    return args.epsilon_start + frac * (args.epsilon_end - args.epsilon_start)


def build_config(
    args: Args,
    seed: int = 0,
    num_env_runners: int = 0,
    cpus_per_env_runner: float = 1.0,
    gpus_per_learner: float = 0.0,
    max_env_runner_restarts: int = 0,
):
    """The RLlib DQNConfig for these arguments (new API stack: RLModule, Learner, EnvRunner)."""
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    if args.replay_buffer == "prioritized":
        buffer = {
            "type": "PrioritizedEpisodeReplayBuffer",
            "capacity": args.buffer_capacity,
            "alpha": args.prioritized_alpha,
            "beta": args.prioritized_beta,
        }
    else:
        buffer = {"type": "EpisodeReplayBuffer", "capacity": args.buffer_capacity}
    epsilon = [(0, args.epsilon_start), (args.epsilon_steps, args.epsilon_end)]
    n_step = args.n_step if isinstance(args.n_step, int) else tuple(args.n_step)
    config = (
        DQNConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment(args.env)
        .framework("torch")
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=args.envs_per_runner,
            num_cpus_per_env_runner=cpus_per_env_runner if num_env_runners else 1,
            rollout_fragment_length=args.rollout_fragment_length or "auto",
        )
        .learners(num_learners=0, num_gpus_per_learner=gpus_per_learner)
        .training(
            lr=args.lr,
            gamma=args.gamma,
            train_batch_size_per_learner=args.train_batch_size,
            grad_clip=args.grad_clip,
            training_intensity=args.training_intensity,
            replay_buffer_config=buffer,
            num_steps_sampled_before_learning_starts=args.learning_starts,
            n_step=n_step,
            double_q=args.double_q,
            dueling=args.dueling,
            target_network_update_freq=args.target_update_freq,
            tau=args.tau,
            epsilon=epsilon,
        )
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=list(args.hiddens),
                fcnet_activation=args.activation,
                fcnet_bias_initializer="zeros_",
                head_fcnet_hiddens=list(args.head_hiddens),
                head_fcnet_bias_initializer="zeros_",
            )
        )
        .reporting(
            min_sample_timesteps_per_iteration=args.steps_per_iteration,
            min_time_s_per_iteration=0,
            metrics_num_episodes_for_smoothing=args.return_window,
        )
        .debugging(seed=seed)
    )
    if num_env_runners:
        config = config.fault_tolerance(
            restart_failed_env_runners=max_env_runner_restarts != 0,
            max_num_env_runner_restarts=(
                10**6 if max_env_runner_restarts < 0 else max_env_runner_restarts
            ),
        )
    return config


# --- metrics -----------------------------------------------------------------------------------


def iteration_row(result: dict[str, Any], args: Args, time_total_s: float) -> dict[str, Any]:
    """One metrics.jsonl row from an RLlib result dict. `step` is the lifetime env-step count."""
    er = result.get("env_runners", {}) or {}
    learner = (result.get("learners", {}) or {}).get("default_policy", {}) or {}
    env_steps = int(er.get("num_env_steps_sampled_lifetime", 0) or 0)

    def num(x):
        try:
            x = float(x)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(x) else x

    row = {
        "step": env_steps,
        "env_steps": env_steps,
        "iteration": int(result.get("training_iteration", 0)),
        "episode_return_mean": num(er.get("episode_return_mean")),  # smoothed by train_loop
        "episode_return_mean_iter": num(er.get("episode_return_mean")),
        "episodes_iter": int(er.get("num_episodes", 0) or 0),
        "episode_return_max": num(er.get("episode_return_max")),
        "episode_len_mean": num(er.get("episode_len_mean")),
        "episodes": int(er.get("num_episodes_lifetime", 0) or 0),
        "epsilon": round(epsilon_at(args, env_steps), 4),
        "qf_loss": num(learner.get("qf_loss")),
        "time_total_s": round(time_total_s, 2),
        "iteration_time_s": num(result.get("time_this_iter_s")),
        "env_steps_per_s": None,
    }
    sampled = num(er.get("num_env_steps_sampled"))
    if sampled and row["iteration_time_s"]:
        row["env_steps_per_s"] = round(sampled / row["iteration_time_s"], 1)
    return row


def smoothed_return(history: list[list[float]], window: int) -> float | None:
    """Mean return of the last `window` episodes, from per-iteration [mean, episodes] pairs.

    RLlib 2.60 reports `episode_return_mean` over the episodes that finished in the current
    iteration only (its metrics are cleared on every reduce), which late in training is a
    handful of 500-step episodes; this is the window the spec asks for. The oldest iteration
    counts with part of its episodes when it straddles the window edge."""
    total, count = 0.0, 0
    for mean, n in reversed(history):
        take = min(int(n), window - count)
        total += mean * take
        count += take
        if count >= window:
            break
    return total / count if count else None


def push_returns(history: list[list[float]], row: dict[str, Any], window: int) -> None:
    """Record this iteration's [mean, episodes] and drop what no longer reaches the window."""
    if row.get("episode_return_mean_iter") is not None and row.get("episodes_iter"):
        history.append([row["episode_return_mean_iter"], row["episodes_iter"]])
    while len(history) > 1 and sum(n for _, n in history[1:]) >= window:
        history.pop(0)


def stop_reason(args: Args, row: dict[str, Any]) -> str | None:
    ret = row.get("episode_return_mean")
    if args.stop_return is not None and ret is not None and ret >= args.stop_return:
        return f"mean return {ret:.1f} >= stop_return {args.stop_return:g}"
    greedy = row.get("greedy_return_mean")
    if (
        args.stop_greedy_return is not None
        and greedy is not None
        and row.get("greedy_episodes") == args.greedy_episodes
        and greedy >= args.stop_greedy_return
    ):
        return (
            f"greedy mean return {greedy:.1f} over {args.greedy_episodes} episodes >= "
            f"stop_greedy_return {args.stop_greedy_return:g}"
        )
    if args.stop_env_steps is not None and row.get("env_steps", 0) >= args.stop_env_steps:
        return f"env steps {row['env_steps']:,} >= stop_env_steps {args.stop_env_steps:,}"
    if args.stop_time_s is not None and row.get("time_total_s", 0.0) >= args.stop_time_s:
        return f"training time {row['time_total_s']:.0f} s >= stop_time_s {args.stop_time_s:g}"
    return None


# --- checkpoints -------------------------------------------------------------------------------


def checkpoint_name(iteration: int) -> str:
    return rundir.checkpoint_name(iteration)


def save_checkpoint(algo, run_dir: str, row: dict[str, Any], args: Args, keep: int) -> str:
    """RLlib's own checkpoint (save_to_path), our counters, optionally the replay buffer, and
    `_COMPLETE` last; then prune to the newest `keep`. `run_dir` is a local folder or a URI
    (s3://...): the checkpoint is written to a local folder first and then uploaded, with the
    marker last, so a half-uploaded one is never taken as complete."""
    path = rundir.join(run_dir, checkpoint_name(row["iteration"]))
    rundir.delete(path)
    local = Path(tempfile.mkdtemp(prefix="orch-dqn-")) if rundir.is_uri(run_dir) else Path(path)
    algo.save_to_path(str(local))
    if args.checkpoint_replay_buffer and getattr(algo, "local_replay_buffer", None) is not None:
        with open(local / BUFFER_FILE, "wb") as fh:
            pickle.dump(algo.local_replay_buffer.get_state(), fh, protocol=pickle.HIGHEST_PROTOCOL)
    state = {
        k: row.get(k)
        for k in (
            "step",
            "env_steps",
            "iteration",
            "episode_return_mean",
            "episodes",
            "time_total_s",
        )
    }
    state["env"] = args.env
    state["recent_returns"] = row.get("_recent_returns", [])
    (local / STATE_FILE).write_text(json.dumps(state, indent=2))
    if rundir.is_uri(run_dir):
        rundir.upload_dir(local, path)
        shutil.rmtree(local, ignore_errors=True)
    rundir.write_text(path, rundir.COMPLETE_MARKER, "")  # last: the checkpoint is complete
    done = rundir.complete_checkpoints(run_dir)
    for old in done[:-keep]:
        rundir.delete(old)
    return path


def seed_replay_buffer(algo, seed: int, env_steps: int = 0) -> None:
    """Seed the replay buffer's sampler, which `.debugging(seed=...)` leaves alone.

    RLlib 2.60's EpisodeReplayBuffer (and the prioritized one) draw from
    `np.random.default_rng(seed=None)`: fresh OS entropy in every process, so two runs of the
    same seeded spec sampled different batches and learned different curves. A run that
    resumes at `env_steps` draws a stream of its own, the same on every rerun.
    """
    import numpy as np

    buf = getattr(algo, "local_replay_buffer", None)
    if buf is not None and hasattr(buf, "rng"):
        buf.rng = np.random.default_rng([seed, env_steps])


def restore(algo, checkpoint: Path) -> dict[str, Any]:
    """Load RLlib's state (weights, optimizer, env-step counters, iteration) and our buffer
    (`checkpoint`: a local folder; one in a bucket is downloaded first)."""
    checkpoint = rundir.local_copy(checkpoint)
    algo.restore_from_path(str(checkpoint))
    buf = checkpoint / BUFFER_FILE
    if buf.exists() and getattr(algo, "local_replay_buffer", None) is not None:
        with open(buf, "rb") as fh:
            algo.local_replay_buffer.set_state(pickle.load(fh))
    return rundir.read_state(checkpoint)


# --- greedy evaluation -------------------------------------------------------------------------


def load_module(checkpoint: str | Path):
    """The trained RLModule from an RLlib algorithm checkpoint directory."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(checkpoint) / MODULE_SUBDIR
    if not path.is_dir():
        raise FileNotFoundError(
            f"{checkpoint}: no RLModule at {MODULE_SUBDIR} (not an RLlib DQN checkpoint?)"
        )
    return RLModule.from_checkpoint(str(path))


def greedy_returns(module, env_id: str, episodes: int, seed: int = 0) -> list[float]:
    """Undiscounted returns of `episodes` greedy (argmax Q) episodes, env seeded per episode."""
    import gymnasium as gym
    import numpy as np
    import torch

    env = gym.make(env_id)
    out: list[float] = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                with torch.no_grad():
                    batch = {"obs": torch.as_tensor(np.asarray(obs, dtype=np.float32)[None])}
                    action = int(module.forward_inference(batch)["actions"][0])
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            out.append(total)
    finally:
        env.close()
    return out


GREEDY_SCREEN = 10  # greedy episodes a policy must pass before an evaluation plays the rest
GREEDY_SEED = 2_000_000  # env seeds of the evaluations during training: seed + this + i


def greedy_check(
    module, env_id: str, episodes: int, target: float | None, seed: int = 0
) -> list[float]:
    """The returns of one greedy evaluation during training: `episodes` greedy episodes, where,
    with more than GREEDY_SCREEN of them and a `target`, the first GREEDY_SCREEN screen: a
    policy whose screen averages below the target plays no more. A screened-out evaluation
    (fewer returns than `episodes`) never meets the target, so the screen can only make a run
    reach it later, never sooner."""
    screen = min(GREEDY_SCREEN, episodes) if target is not None else episodes
    returns = greedy_returns(module, env_id, screen, seed=seed)
    if episodes > screen and sum(returns) / screen >= target:
        returns += greedy_returns(module, env_id, episodes - screen, seed=seed + screen)
    return returns


# --- the loop ----------------------------------------------------------------------------------


def train_loop(config: dict, on_iteration=None) -> dict[str, Any]:
    """Train until a stop criterion holds; returns the final metrics.

    config: train (Args), seed, run_dir (None: no files), checkpoint {every_steps (env steps),
    keep}, resume_from (a checkpoint dir), num_env_runners, cpus_per_env_runner,
    gpus_per_learner, max_failures. `on_iteration(row)` is called after every iteration
    (a `checkpoint` key holds the path when one was saved).
    """
    import ray
    import torch

    args = Args.model_validate(config.get("train", {}))
    seed = int(config.get("seed", 0))
    run_dir = config.get("run_dir") or None  # a local folder or a URI
    metrics = (
        rundir.MetricsWriter(run_dir, flush_s=2.0) if run_dir and rundir.is_uri(run_dir) else None
    )
    ck = config.get("checkpoint") or {}
    every = int(ck.get("every_steps", 10_000))
    keep = int(ck.get("keep", 2))
    # One intra-op thread: the nets are tiny and the driver also steps the env; more threads
    # only add contention on a small machine.
    torch.set_num_threads(1)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False)

    algo = build_config(
        args,
        seed,
        num_env_runners=int(config.get("num_env_runners", 0)),
        cpus_per_env_runner=float(config.get("cpus_per_env_runner", 1.0)),
        gpus_per_learner=float(config.get("gpus_per_learner", 0.0)),
        max_env_runner_restarts=int(config.get("max_failures", 0)),
    ).build_algo()
    row: dict[str, Any] = {
        "step": 0,
        "env_steps": 0,
        "iteration": 0,
        "time_total_s": 0.0,
        "episode_return_mean": None,
    }
    prior_time = 0.0
    recent: list[list[float]] = []  # [mean return, episodes] of the latest iterations
    if config.get("resume_from"):
        state = restore(algo, config["resume_from"])
        row.update({k: v for k, v in state.items() if k in row})
        prior_time = float(state.get("time_total_s") or 0.0)
        recent = [list(x) for x in state.get("recent_returns") or []]
    seed_replay_buffer(algo, seed, int(row["env_steps"]))
    last_saved = last_greedy = row["env_steps"]
    reason = stop_reason(args, row) if config.get("resume_from") else None
    started = time.time()
    checkpoint = str(config.get("resume_from") or "")
    try:
        while reason is None:
            result = algo.train()
            row = iteration_row(result, args, prior_time + time.time() - started)
            push_returns(recent, row, args.return_window)
            row["episode_return_mean"] = smoothed_return(recent, args.return_window)
            row["_recent_returns"] = recent
            if args.greedy_every and _crossed(last_greedy, row["env_steps"], args.greedy_every):
                returns = greedy_check(
                    algo.get_module(),
                    args.env,
                    args.greedy_episodes,
                    args.stop_greedy_return,
                    seed=seed + GREEDY_SEED,
                )
                row["greedy_return_mean"] = round(sum(returns) / len(returns), 2)
                row["greedy_episodes"] = len(returns)
                last_greedy = row["env_steps"]
            reason = stop_reason(args, row)
            due = _crossed(last_saved, row["env_steps"], every)
            if run_dir is not None and (due or reason is not None):
                checkpoint = str(save_checkpoint(algo, run_dir, row, args, keep))
                last_saved = row["env_steps"]
                row["checkpoint"] = checkpoint
            row.pop("_recent_returns", None)
            if metrics is not None:  # a bucket: rows in chunks, every 2 s
                metrics.add({**row, "time": time.time()})
            elif run_dir is not None:
                rundir.append_metrics(run_dir, {**row, "time": time.time()})
            if on_iteration is not None:
                on_iteration(row)
        final = {
            k: v
            for k, v in row.items()
            if k not in ("checkpoint", "iteration_time_s", "env_steps_per_s")
        }
        final["stop_reason"] = reason
        if args.eval_episodes:
            returns = greedy_returns(
                algo.get_module(), args.env, args.eval_episodes, seed=seed + 1_000_000
            )
            final.update(
                eval_return_mean=float(sum(returns) / len(returns)),
                eval_return_std=_std(returns),
                eval_episodes=len(returns),
            )
        final["checkpoint"] = checkpoint
        return final
    except KeyboardInterrupt:
        # Save where we are so that rerunning the same command continues from here.
        if run_dir is not None and row.get("iteration") and row["env_steps"] != last_saved:
            save_checkpoint(algo, run_dir, {**row, "_recent_returns": recent}, args, keep)
        raise
    finally:
        if metrics is not None:
            metrics.close()
        algo.stop()


def _crossed(last: int, now: int, every: int) -> bool:
    """True when env steps went past a multiple of `every` since `last`."""
    return now // every > last // every


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def main(argv: list[str] | None = None) -> None:
    """Run alone (local Ray, no orch CLI): flags are the Args fields, e.g. --stop-return 100."""
    from orchestrator.worker.standalone import parse_args

    train, _data, ns = parse_args(Args, None, argv, __doc__ or "")
    if ns.run_dir:
        Path(ns.run_dir).mkdir(parents=True, exist_ok=True)
    config = {
        "train": train,
        "seed": ns.seed,
        "run_dir": ns.run_dir,
        "checkpoint": {"every_steps": 10_000, "keep": 2},
        "resume_from": ns.resume_from,
    }

    def show(row):
        ret = row["episode_return_mean"]
        print(
            f"iter {row['iteration']:>4}  env steps {row['env_steps']:>8,}  mean return "
            f"{'-' if ret is None else f'{ret:7.1f}'}",
            flush=True,
        )

    final = train_loop(config, on_iteration=show)
    print(json.dumps(final, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
