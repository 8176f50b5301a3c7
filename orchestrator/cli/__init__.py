"""`orch`: validate, plan and run training jobs described by one YAML spec.

\b
    orch validate jobs/mnist_mlp.yaml            # every spec error at once; exit 2 if any
    orch plan jobs/mnist_mlp.yaml                # the resolved plan; starts nothing
    orch run jobs/mnist_mlp.yaml train.lr=3e-4 resources.workers=2
    orch new my_task                             # a workload of your own to start from
    orch runs                                    # the run ledger
    orch schema > jobspec.schema.json            # JSON Schema for your editor

Overrides are dotted `key=value` pairs, values parsed as YAML (3e-4, true, [512, 256]).
"""

from __future__ import annotations

import sys

import typer

from orchestrator.cli import (
    cluster,
    compress,
    data,
    jobs,
    new,
    queue,
    report,
    rollout,
    run,
    schedule,
    sweep,
    translate,
)
from orchestrator.cli.console import err_console
from orchestrator.errors import OrchestratorError

app = typer.Typer(
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# One module per verb group, in the order `orch --help` lists them. Each keeps its heavy
# imports inside its commands, so `orch --help` stays fast.
for _group in (
    run,
    new,
    data,
    sweep,
    schedule,
    jobs,
    queue,
    cluster,
    compress,
    translate,
    rollout,
    report,
):
    _group.register(app)


def main() -> None:
    try:
        app()
    except OrchestratorError as exc:  # pragma: no cover - commands catch their own
        err_console.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
