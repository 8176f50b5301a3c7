"""`orch sweep`: a Ray Tune sweep over the spec's `sweep:` section."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from orchestrator.cli.console import console, fail
from orchestrator.cli.head import dashboard_option, pass_on_dashboard
from orchestrator.errors import OrchestratorError, exit_for_status
from orchestrator.sweep.driver import run_sweep
from orchestrator.sweep.spec import SweepInputError, validate_sweep


def print_sweep_summary(summary: dict[str, Any], console) -> None:

    t = Table(title=f"sweep {summary.get('sweep_id')}", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    t.add_row("status", summary.get("status", ""))
    t.add_row("trials", str(len(summary.get("trials", []))))
    stopped = sum(1 for r in summary.get("trials", []) if not r["finished"] and not r["error"])
    t.add_row("stopped early", str(stopped))
    t.add_row("best trial", str(summary.get("best_trial", "-")))
    t.add_row("best config", json.dumps(summary.get("best_config")))
    bm = summary.get("best_metric")
    t.add_row(f"best {summary.get('metric')}", f"{bm:.4f}" if isinstance(bm, float) else str(bm))
    t.add_row("best checkpoint", str(summary.get("best_checkpoint") or "-"))
    t.add_row("plot", str(summary.get("plot") or "-"))
    t.add_row("wall time", f"{summary.get('wall_time_s', 0):.1f} s")
    t.add_row("sweep dir", summary.get("sweep_dir", ""))
    if summary.get("error"):
        t.add_row("error", f"[red]{summary['error']}[/red]")
    console.print(t)


def register(app) -> None:

    @app.command("sweep")
    def sweep_cmd(
        spec: str = typer.Argument(..., help="Path to a job spec YAML with a sweep: section."),
        overrides: list[str] | None = typer.Argument(
            None, help="Dotted overrides, e.g. sweep.num_samples=8"
        ),
        resume: bool = typer.Option(
            False,
            "--resume",
            help="Continue the latest interrupted sweep of this spec (or --name).",
        ),
        name: str | None = typer.Option(
            None, "--name", help="Sweep id (directory under storage_path)."
        ),
        address: str | None = typer.Option(
            None,
            "--address",
            envvar="RAY_ADDRESS",
            help="Ray cluster address; default: an embedded local Ray.",
        ),
        dashboard: bool = dashboard_option(),
        continue_: bool = typer.Option(
            False,
            "--continue",
            help="With --name: continue that sweep if it was started before, else start it "
            "(what a queued sweep runs, so a retry or a preempted sweep resumes).",
        ),
        schedule_id: str | None = typer.Option(
            None,
            "--schedule-id",
            help="Run as a fire of this schedule (what a scheduled sweep runs through the "
            "queue): its own searcher seed, the best configs of the schedule's earlier sweeps "
            "(--warm-start), and a champion row when it beats the current one.",
        ),
        warm_start: int = typer.Option(
            3, "--warm-start", min=0, help="With --schedule-id: earlier best configs to seed."
        ),
        promote: bool = typer.Option(
            True, "--promote/--no-promote", help="With --schedule-id: record a champion."
        ),
    ) -> None:
        """Run a Ray Tune sweep over the spec's `sweep:` section (see docs/sweeps.md).

        Prints a table of trials while it runs; at the end the best config, its metric, its
        checkpoint and a PNG of the metric per trial. Every trial is a ledger row (orch runs).
        """
        from orchestrator.runtime import stop_on_sigterm
        from orchestrator.spec import load_spec

        stop_on_sigterm()
        pass_on_dashboard(dashboard)
        try:
            if (continue_ or schedule_id) and not name:
                raise SweepInputError(
                    "--continue and --schedule-id need --name (the sweep id to continue)"
                )
            s = load_spec(spec, overrides or [])
            if not resume:
                validate_sweep(s)
            if schedule_id:
                from orchestrator.sweep.schedule import fire_sweep

                summary = fire_sweep(
                    s,
                    schedule_id,
                    name,
                    warm_start=warm_start,
                    promote=promote,
                    address=address,
                    console=console,
                    log=console.print,
                )
            else:
                if continue_:
                    from orchestrator import rundir
                    from orchestrator.rundir import resolve_storage
                    from orchestrator.sweep.spec import SWEEP_FILE

                    resume = rundir.exists(
                        rundir.join(resolve_storage(s.storage_path), name, SWEEP_FILE)
                    )
                summary = run_sweep(
                    s, resume=resume, sweep_id=name, address=address, console=console
                )
        except OrchestratorError as exc:
            fail(exc)
        print_sweep_summary(summary, console)
        if summary["status"] != "SUCCEEDED":
            raise typer.Exit(exit_for_status(summary["status"]))
