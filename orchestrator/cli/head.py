"""`orch up` / `orch down`: a persistent local Ray head that later `orch run`s join."""

from __future__ import annotations

import os
from typing import Any

import typer

from orchestrator.cli.console import console, fail
from orchestrator.errors import OrchestratorError


def dashboard_option() -> Any:
    """`--dashboard` of the commands that may start an embedded Ray (orch run, orch sweep)."""
    return typer.Option(
        False,
        "--dashboard",
        envvar="ORCH_DASHBOARD",
        help="Start the embedded Ray's dashboard too (on 127.0.0.1; off by default: it "
        "costs seconds at every start). Ignored with --address.",
    )


def pass_on_dashboard(flag: bool) -> None:
    """Pass --dashboard on to runtime.connect (orchestrator/runtime.py reads ORCH_DASHBOARD)."""
    if flag:
        os.environ["ORCH_DASHBOARD"] = "1"


def register(app) -> None:
    @app.command("up")
    def up_cmd(
        num_cpus: int | None = typer.Option(
            None, "--num-cpus", min=1, help="Logical CPUs of the head (default: all of them)."
        ),
        dashboard: bool = typer.Option(
            True,
            "--dashboard/--no-dashboard",
            help="Start the head's dashboard (and its Jobs API) on 127.0.0.1.",
        ),
    ) -> None:
        """Start a local Ray head that later runs join, instead of each starting its own.

        `orch run` and `orch sweep` without --address then join it (no Ray start and stop per
        run; bench/cold_start.py measures the difference). It binds to 127.0.0.1 only, uses
        token auth, and lives until `orch down`. Its state: $ORCH_HOME/head.json (~/.orch).
        """
        from orchestrator import localhead

        with console.status("starting a local Ray head"):
            try:
                state = localhead.up(num_cpus=num_cpus, dashboard=dashboard)
            except OrchestratorError as exc:
                fail(exc)
        console.print(f"local head up at {state['address']} (pid {state['pid']})")
        if state.get("dashboard_url"):
            console.print(f"dashboard and Jobs API: {state['dashboard_url']}")
        console.print(
            "`orch run SPEC` and `orch sweep SPEC` now join it; `orch down` stops it.\n"
            "Other Ray clients (a script's ray.init(), `ray job submit --address "
            "<dashboard>`) need:\n"
            f"  export RAY_ADDRESS={state['address']} RAY_AUTH_MODE=token "
            f"RAY_AUTH_TOKEN_PATH={localhead.token_file()}",
            soft_wrap=True,
        )

    @app.command("down")
    def down_cmd() -> None:
        """Stop the local head `orch up` started (its processes only; never `ray stop`)."""
        from orchestrator import localhead

        state = localhead.down()
        if state is None:
            console.print("no local head is up")
            return
        console.print(f"stopped the local head at {state['address']} (pid {state['pid']})")
