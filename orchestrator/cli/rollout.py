"""`orch rollout`: greedy episodes of a trained RLlib policy."""

from __future__ import annotations

import json

import typer

from orchestrator.cli.console import console, fail
from orchestrator.errors import OrchestratorError
from orchestrator.rollout import rollout


def register(app) -> None:

    @app.command("rollout")
    def rollout_cmd(
        checkpoint: str = typer.Argument(
            ..., help="A checkpoint_NNNNNN directory, or a run directory (its latest checkpoint)."
        ),
        episodes: int = typer.Option(10, "--episodes", "-n", min=1, help="Episodes to run."),
        seed: int = typer.Option(0, "--seed", help="Env seed of the first episode (+1 each)."),
        env: str | None = typer.Option(
            None, "--env", help="Gymnasium env id; default: the checkpoint's own."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Run a trained RLlib policy greedily (argmax Q) and report each episode's return.

        orch rollout runs/cartpole-dqn --episodes 20
        """

        try:
            out = rollout(checkpoint, episodes, seed=seed, env=env)
        except OrchestratorError as exc:
            fail(exc)
        if as_json:
            print(json.dumps(out, indent=2))
            return
        steps = out["env_steps"]
        console.print(
            f"{out['checkpoint']} ({out['env']}"
            f"{f', trained {steps:,} env steps' if steps else ''})",
            highlight=False,
        )
        for i, r in enumerate(out["returns"]):
            console.print(f"  episode {i:>3}  return {r:6.1f}", highlight=False)
        console.print(
            f"mean return {out['mean']:.1f} ± {out['std']:.1f} over {out['episodes']} "
            f"episodes (min {out['min']:.0f}, max {out['max']:.0f})",
            highlight=False,
        )
