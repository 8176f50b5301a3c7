"""`orch report | compare`: HTML reports of runs and sweeps, and runs side by side."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from orchestrator.cli.console import console, fail
from orchestrator.cli.output import print_table
from orchestrator.errors import OrchestratorError
from orchestrator.report import (
    ReportOptionError,
    Run,
    _fmt,
    _labels,
    compare,
    compare_png,
    load_run,
    report,
    resolve,
)


def register(app) -> None:

    @app.command("report")
    def report_cmd(
        run: str = typer.Argument(
            ..., help="A run or sweep: its directory, or its name under --storage-path."
        ),
        storage_path: str = typer.Option(
            "runs", "--storage-path", help="Where the runs and ledger live."
        ),
        out: str | None = typer.Option(
            None, "--out", help="Folder for index.html and PNGs (default: <run dir>/report)."
        ),
        open_: bool = typer.Option(False, "--open", help="Open the page in a browser."),
    ) -> None:
        """Write a self-contained HTML report (plots embedded) and PNGs for a run or a sweep.

        A run's page: status, final metrics, learning curves, throughput and memory,
        checkpoints, compression results, resolved spec, links to its files and its sweep.
        A sweep's page: its trials ranked by the sweep metric, overlaid curves, links to each
        trial's own report (written too).
        """

        try:
            index = report(run, storage_path, out)
        except OrchestratorError as exc:
            fail(exc)
        pngs = sorted(p.name for p in index.parent.glob("*.png"))
        console.print(
            f"report: {index}" + (f"  (+ {', '.join(pngs)})" if pngs else ""), highlight=False
        )
        if open_:
            import webbrowser

            webbrowser.open(index.resolve().as_uri())

    @app.command("compare")
    def compare_cmd(
        runs: list[str] = typer.Argument(
            ..., help="Two or more runs: directories or names under --storage-path."
        ),
        storage_path: str = typer.Option(
            "runs", "--storage-path", help="Where the runs and ledger live."
        ),
        metric: list[str] | None = typer.Option(
            None,
            "--metric",
            "-m",
            help="Curves to overlay (repeatable); default: the common learning curves.",
        ),
        out: str = typer.Option("compare.png", "--out", help="PNG of the overlaid curves."),
        as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    ) -> None:
        """Side by side: the spec keys that differ, the final metrics, and one PNG of the
        runs' curves overlaid."""

        if len(runs) < 2:
            fail(ReportOptionError("compare: give at least two runs"))
        loaded: list[Run] = []
        try:
            for name in runs:
                t = resolve(name, storage_path)
                loaded.append(load_run(t.run_dir, t.ledger_row))
        except OrchestratorError as exc:
            fail(exc)
        labels = _labels(loaded)
        for r, lbl in zip(loaded, labels, strict=False):
            r.name = lbl
        cmp = compare(loaded)
        png = compare_png(loaded, metric or None)
        if png:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_bytes(png)
            cmp["plot"] = str(Path(out).resolve())
        if as_json:
            print(json.dumps(cmp, indent=2, default=str))
            return
        table = Table(title="orch compare")
        table.add_column("")
        for lbl in labels:
            table.add_column(lbl)
        table.add_row("status", *cmp["status"])
        if not cmp["spec"]:
            table.add_row("[dim]spec[/dim]", *["[dim](identical)[/dim]"] * len(labels))
        for k, vals in cmp["spec"].items():
            table.add_row(f"[cyan]{k}[/cyan]", *[_fmt(v) for v in vals])
        table.add_section()
        for k, vals in cmp["metrics"].items():
            table.add_row(f"[bold]{k}[/bold]", *["-" if v is None else _fmt(v) for v in vals])
        print_table(table)
        console.print(
            f"curves: {cmp['plot']}" if png else "curves: no common metrics to plot",
            highlight=False,
        )
