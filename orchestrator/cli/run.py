"""`orch validate | schema | plan | run | runs`: a spec from YAML to a finished run."""

from __future__ import annotations

import json
import os
from typing import Any

import typer
from rich.table import Table

from orchestrator.cli.console import console, fail
from orchestrator.cli.head import dashboard_option, pass_on_dashboard
from orchestrator.cli.output import Format, emit, format_option, print_table
from orchestrator.errors import OrchestratorError, SpecError, exit_for_status

OVERRIDES = typer.Argument(None, help="Dotted overrides, e.g. train.lr=3e-4 resources.workers=2")


def register(app: typer.Typer) -> None:
    @app.command()
    def validate(
        spec: str = typer.Argument(..., help="Path to a job spec YAML."),
        overrides: list[str] | None = OVERRIDES,
    ) -> None:
        """Check a spec and its workload arguments; print every error with its field path.

        Exit 0 when valid, 2 with the list of errors otherwise. Starts nothing.
        """
        from orchestrator.spec import load_spec

        try:
            s = load_spec(spec, overrides or [])
        except SpecError as exc:
            fail(exc)
        console.print(
            f"[green]ok[/green]: {spec} is a valid '{s.workload}' job (spec hash {s.spec_hash()})"
        )

    @app.command()
    def schema() -> None:
        """Print the JSON Schema of the job spec (for editor completion and checking)."""
        from orchestrator.spec import json_schema

        print(json.dumps(json_schema(), indent=2))

    @app.command("plan")
    def plan_cmd(
        spec: str = typer.Argument(..., help="Path to a job spec YAML."),
        overrides: list[str] | None = OVERRIDES,
        name: str | None = typer.Option(
            None, "--name", help="Run name (default: the spec's name)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    ) -> None:
        """Show the resolved plan: resources, strategy, precision, memory estimate, resume point,
        and under `ray:` the Ray objects the launch builds from it (ScalingConfig, RunConfig,
        CheckpointConfig, FailureConfig, TorchConfig; RLlib: the EnvRunner settings).

        No side effects: nothing is started and nothing is written.
        """
        from orchestrator.launch import describe
        from orchestrator.plan import plan
        from orchestrator.spec import load_spec

        try:
            p = plan(load_spec(spec, overrides or []), run_name=name, memory=True)
        except OrchestratorError as exc:
            fail(exc)
        ray_objects = describe(p)
        if as_json:
            print(json.dumps({**p.summary(), "ray": ray_objects}, indent=2, default=str))
        else:
            print(p.to_yaml(ray=ray_objects), end="")
            mem = p.memory or {}
            if mem.get("table"):
                print(mem["table"])
            if (p.pipeline or {}).get("table"):
                print(p.pipeline["table"])

    @app.command()
    def run(
        spec: str = typer.Argument(..., help="Path to a job spec YAML."),
        overrides: list[str] | None = OVERRIDES,
        address: str | None = typer.Option(
            None,
            "--address",
            envvar="RAY_ADDRESS",
            help="Ray cluster address; default: start an embedded local Ray.",
        ),
        name: str | None = typer.Option(
            None, "--name", help="Run name (default: the spec's name)."
        ),
        fresh: bool = typer.Option(
            False, "--fresh", help="Start a new run (name__timestamp) instead of resuming."
        ),
        cluster_config: str | None = typer.Option(
            None,
            "--cluster-config",
            help="A `ray up` YAML (e.g. cluster/gpu.yaml): fail fast when no node type can "
            "hold a worker.",
        ),
        dashboard: bool = dashboard_option(),
    ) -> None:
        """Train a job on Ray. Rerunning the same run name resumes from its latest checkpoint.

        Progress prints while it trains; a summary table at the end. The run directory
        (<storage_path>/<name>/) holds spec.resolved.yaml, metrics.jsonl and checkpoint_NNNNNN/.
        """
        from orchestrator.launch import launch
        from orchestrator.plan import plan
        from orchestrator.runtime import stop_on_sigterm
        from orchestrator.spec import load_spec

        try:
            p = plan(
                load_spec(spec, overrides or []),
                run_name=name,
                fresh=fresh,
                cluster_config=cluster_config,
            )
        except OrchestratorError as exc:
            fail(exc)

        # SIGTERM (`orch stop`, `ray job stop`, a job manager) ends the run like Ctrl-C: a STOPPED
        # row and a clean shutdown, not an abrupt exit that leaves the cleanup to Ray.
        stop_on_sigterm()
        pass_on_dashboard(dashboard)
        try:
            summary = launch(p, console=console, address=address)
        except OrchestratorError as exc:
            fail(exc)
        print_summary(summary)
        if summary["status"] != "SUCCEEDED":
            raise typer.Exit(exit_for_status(summary["status"]))

    @app.command()
    def runs(
        storage_path: str = typer.Option(
            "runs", "--storage-path", help="Where the runs and ledger live."
        ),
        all_events: bool = typer.Option(
            False, "--events", help="Every event, not only each run's latest."
        ),
        workload: str | None = typer.Option(
            None, "--workload", help="Only these workloads (comma-separated)."
        ),
        status: str | None = typer.Option(
            None, "--status", help="Only these statuses, e.g. succeeded,failed."
        ),
        since: str | None = typer.Option(
            None, "--since", help="Started within 30m / 2h / 7d, or since a date (2025-01-31)."
        ),
        sweep: str | None = typer.Option(
            None, "--sweep", help="Only this sweep id (the sweep and its trials)."
        ),
        kind: str | None = typer.Option(
            None, "--kind", help="Only these kinds: run, trial, sweep, compress, ..."
        ),
        sort: str | None = typer.Option(
            None, "--sort", help="Sort by this final metric, highest first."
        ),
        ascending: bool = typer.Option(
            False, "--asc", help="With --sort: lowest first (e.g. loss)."
        ),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Show at most N rows."),
        fmt: Format = format_option(),
    ) -> None:
        """List runs from the ledger (one Parquet file per run event), filtered and sorted.

        orch runs --workload mnist_mlp --status succeeded --since 2d --sort accuracy
        orch runs --sweep mnist-mlp-sweep-20250101-030000 --sort loss --asc
        orch runs --format json | jq '.[] | select(.status == "FAILED") | .run_name'

        json and csv carry every ledger column (times in ISO 8601 UTC; in json, metrics and
        extra as objects).
        """
        from orchestrator import ledger
        from orchestrator.report import select_runs

        rows = (
            ledger.read_events(storage_path).to_pylist()
            if all_events
            else ledger.latest_by_run(storage_path)
        )
        if not rows:
            emit(
                fmt,
                [],
                None,
                keys=ledger.SCHEMA.names,
                empty=f"no runs recorded under {storage_path}/{ledger.LEDGER_DIR}",
            )
            return
        try:
            rows = select_runs(
                rows,
                workload=workload,
                status=status,
                since=since,
                sweep=sweep,
                kind=kind,
                sort=sort,
                ascending=ascending,
                limit=limit,
            )
        except OrchestratorError as exc:
            fail(exc)
        if fmt is not Format.table:
            records = [_ledger_record(r, parse_json=fmt is Format.json) for r in rows]
            emit(fmt, records, None, keys=ledger.SCHEMA.names)
            return
        if not rows:
            console.print(f"no runs under {storage_path} match the filters")
            return
        table = Table(title=f"runs in {storage_path}")
        for col in ("run", "workload", "kind", "status", "start", "end", "metrics", "checkpoint"):
            table.add_column(col)
        shown_keys = {
            "accuracy",
            "loss",
            "step",
            "episode_return_mean",
            "chrf",
            "exact_match",
            sort,
        }
        for r in rows:
            metrics = json.loads(r["metrics"] or "{}")
            shown = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(metrics.items())
                if k in shown_keys
            )
            fmt = "%Y-%m-%d %H:%M:%S"
            table.add_row(
                r["run_name"],
                r["workload"],
                r["kind"],
                r["status"],
                r["start_time"].strftime(fmt) if r["start_time"] else "",
                r["end_time"].strftime(fmt) if r["end_time"] else "",
                shown,
                os.path.basename(r["latest_checkpoint"] or "") or "-",
            )
        print_table(table)


def _ledger_record(row: dict[str, Any], parse_json: bool) -> dict[str, Any]:
    """A ledger row for --format json/csv: every column, times in ISO 8601; with parse_json,
    the JSON columns (metrics, extra) as objects."""
    out = dict(row)
    for k in ("metrics", "extra"):
        if parse_json and isinstance(out.get(k), str):
            try:
                out[k] = json.loads(out[k] or "{}")
            except json.JSONDecodeError:
                pass
    return out


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"run {summary['run_name']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    colour = {"SUCCEEDED": "green", "FAILED": "red", "STOPPED": "yellow"}.get(summary["status"], "")
    table.add_row(
        "status", f"[{colour}]{summary['status']}[/{colour}]" if colour else summary["status"]
    )
    for k, v in sorted((summary.get("metrics") or {}).items()):
        if k in ("time", "checkpoint", "done") or isinstance(v, (dict, list)):
            continue
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    table.add_row("wall time", f"{summary.get('wall_time_s', 0):.1f} s")
    startup = summary.get("startup") or {}
    if startup.get("to_first_step_s") is not None:
        parts = ", ".join(
            f"{k[:-2].replace('_', ' ')} {v:.1f}"
            for k, v in startup.items()
            if k != "to_first_step_s"
        )
        table.add_row("start-up", f"{startup['to_first_step_s']:.1f} s to the first step ({parts})")
    if summary.get("resumed_from_step") is not None:
        table.add_row("resumed from step", str(summary["resumed_from_step"]))
    if summary.get("restarts"):
        table.add_row("restarts", str(summary["restarts"]))
    nodes = sorted(
        {str(w.get("node_id") or w.get("host"))[:12] for w in summary.get("workers") or []}
    )
    if len(nodes) > 1:
        table.add_row("worker nodes", ", ".join(nodes))
    table.add_row("checkpoint", summary.get("checkpoint") or "-")
    table.add_row("run dir", summary.get("run_dir", ""))
    if summary.get("error"):
        table.add_row("error", f"[red]{summary['error']}[/red]")
    console.print(table)
    acc = (summary.get("metrics") or {}).get("accuracy")
    if acc is not None:
        console.print(f"final test accuracy: {acc:.4f}")
