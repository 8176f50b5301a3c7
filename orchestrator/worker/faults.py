"""Fault injection for reliability tests and game days: `ORCH_FAULTS` in the driver's environment.

    ORCH_FAULTS='{"raise_at_step": 20, "times": 2}' orch run jobs/mnist_mlp.yaml

makes rank 0 raise `InjectedFault` when it reaches step 20, the first `times` times it gets
there (a counter file in the run directory survives worker restarts), so a run with
`failure.max_failures >= times` restarts from its checkpoint and finishes, and one with fewer
fails with the injected error as its cause. Nothing happens when ORCH_FAULTS is unset.

A slow run instead (a straggler, or a run that must still be training when something else
happens to it): rank 0 sleeps `sleep_s` seconds at every step after `slow_after_step`.

    ORCH_FAULTS='{"slow_after_step": 40, "sleep_s": 0.25}' orch run jobs/mnist_mlp.yaml

A JSON list holds one object per run, each naming its run, for runs launched side by side from
one process:

    ORCH_FAULTS='[{"run": "a", "raise_at_step": 12, "times": 2},
                  {"run": "b", "raise_at_step": 12, "times": 3}]'
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from orchestrator.errors import FaultConfigError

ENV = "ORCH_FAULTS"
COUNTER = ".faults_fired"


class InjectedFault(RuntimeError):
    """Raised on purpose by ORCH_FAULTS."""


def from_env(run_name: str | None = None, raw: str | None = None) -> dict[str, Any] | None:
    """The faults for run `run_name`: the object in ORCH_FAULTS (or `raw`, the driver's
    ORCH_FAULTS shipped to a sweep trial that plans on another process), or from a list the
    entry whose "run" is `run_name` (None when no entry names it)."""
    raw = raw or os.environ.get(ENV)
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FaultConfigError(
            f'{ENV} must be JSON like \'{{"raise_at_step": 20, "times": 1}}\': {exc}'
        ) from None
    if isinstance(cfg, list):
        if not all(isinstance(c, dict) and "run" in c for c in cfg):
            raise FaultConfigError(f'{ENV}: each object of a list must name its run ("run": NAME)')
        cfg = next((c for c in cfg if c["run"] == run_name), None)
        if cfg is None:
            return None
    if not isinstance(cfg, dict) or not ({"raise_at_step", "slow_after_step"} & cfg.keys()):
        raise FaultConfigError(
            f"{ENV} must be a JSON object with raise_at_step (and times) or "
            'slow_after_step (and sleep_s), or a list of them each with "run"'
        )
    for key in ("raise_at_step", "times", "slow_after_step", "sleep_s"):
        value = cfg.get(key, 0)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < 0
            or (key != "sleep_s" and not isinstance(value, int))
        ):
            kind = "a number of seconds >= 0" if key == "sleep_s" else "a whole number >= 0"
            raise FaultConfigError(f"{ENV}: {key} must be {kind}, got {value!r}")
    return cfg


def maybe_fail(faults: dict[str, Any] | None, step: int, rank: int, run_dir: str | None) -> None:
    """Raise InjectedFault on rank 0 at the configured step, up to `times` times in all; or
    sleep on rank 0 at each step after `slow_after_step`."""
    if not faults or rank != 0:
        return
    if "slow_after_step" in faults and step > int(faults["slow_after_step"]):
        time.sleep(float(faults.get("sleep_s", 0.25)))
    if "raise_at_step" not in faults or step != int(faults["raise_at_step"]) or not run_dir:
        return
    counter = Path(run_dir) / COUNTER
    fired = int(counter.read_text()) if counter.exists() else 0
    if fired >= int(faults.get("times", 1)):
        return
    fired += 1
    tmp = counter.with_suffix(".tmp")
    tmp.write_text(str(fired))
    os.replace(tmp, counter)
    raise InjectedFault(f"injected failure {fired} at step {step} (ORCH_FAULTS)")
