"""`orch`: validate, plan and run training jobs described by one YAML spec.

\b
    orch validate jobs/mnist_mlp.yaml            # every spec error at once; exit 2 if any
    orch plan jobs/mnist_mlp.yaml                # the resolved plan; starts nothing
    orch run jobs/mnist_mlp.yaml train.lr=3e-4 resources.workers=2
    orch new my_task                             # a workload of your own to start from
    orch runs                                    # the run ledger
    orch schema > jobspec.schema.json            # JSON Schema for your editor

Overrides are dotted `key=value` pairs, values parsed as YAML (3e-4, true, [512, 256]).
Listings (runs, list, queue, schedule list, ...) take --format table|json|csv.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from orchestrator.cli import (
    cluster,
    compress,
    data,
    head,
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
from orchestrator.errors import ExitCode, OrchestratorError, exit_code_table

# `\b` keeps click from re-flowing the table into one paragraph.
EPILOG = (
    "Exit codes (the same for every command; orchestrator/errors.py, README):\n\n\b\n"
    + exit_code_table()
)

app = typer.Typer(
    help=__doc__,
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# One module per verb group, in the order `orch --help` lists them. Each keeps its heavy
# imports inside its commands, so `orch --help` stays fast.
for _group in (
    run,
    head,
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


def _stoppable(fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """fn, with Ctrl-C (and SIGTERM, which orch turns into KeyboardInterrupt) exiting 130, as
    a stopped process does in a shell, instead of click's "Aborted!" and 1."""
    if fn is None or getattr(fn, "_orch_stoppable", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            err_console.print("stopped", highlight=False)
            raise typer.Exit(ExitCode.STOPPED) from None

    wrapper._orch_stoppable = True  # type: ignore[attr-defined]
    return wrapper


def _make_stoppable(group: typer.Typer) -> None:
    for info in group.registered_commands:
        info.callback = _stoppable(info.callback)
    if group.registered_callback is not None:
        group.registered_callback.callback = _stoppable(group.registered_callback.callback)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _make_stoppable(sub.typer_instance)


_make_stoppable(app)


def main() -> None:
    try:
        app()
    except OrchestratorError as exc:  # pragma: no cover - commands catch their own
        err_console.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(exc.exit_code)
    except BrokenPipeError:  # `orch runs | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except ModuleNotFoundError as exc:
        # A module of an extra that a command needed and no spec announced (orch rollout,
        # translate or compress on a checkpoint): the line that installs it, exit 2.
        from orchestrator import extras

        if extras.extra_for_module(exc.name) is None:
            raise
        what = "orch " + " ".join(a for a in sys.argv[1:2] if not a.startswith("-"))
        err_console.print(
            f"error: {extras.missing_module_message(exc.name, what.strip())}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        sys.exit(extras.MissingExtra.exit_code)


if __name__ == "__main__":
    main()
