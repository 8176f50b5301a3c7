"""`orch new NAME`: a workload of your own to start from (orchestrator/scaffold.py)."""

from __future__ import annotations

import typer

from orchestrator.cli.console import console, fail
from orchestrator.errors import OrchestratorError


def register(app: typer.Typer) -> None:
    @app.command("new")
    def new_cmd(
        name: str = typer.Argument(..., help="The workload's name: a Python module name."),
        folder: str = typer.Option(".", "--dir", help="Where to write the files."),
        force: bool = typer.Option(False, "--force", help="Overwrite files that exist."),
    ) -> None:
        """Write NAME.py (a workload: typed Args, build_model, train_loop on the worker
        session, runnable alone), NAME.yaml (its spec) and test_NAME.py; they run at once.

            orch new mytask && orch run mytask.yaml && pytest test_mytask.py
        """
        from orchestrator.scaffold import write_skeleton

        try:
            paths = write_skeleton(name, folder, force=force)
        except OrchestratorError as exc:
            fail(exc)
        for p in paths:
            console.print(f"wrote {p}", highlight=False)
        spec = paths[1]
        console.print(
            f"next: python {paths[0]} --epochs 2   |   orch run {spec}   |   pytest {paths[2]}",
            highlight=False,
            soft_wrap=True,
        )
