"""`orch cluster validate | pools`: check `ray up` and KubeRay YAMLs before launching them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from orchestrator.cli.console import console, err_console, fail
from orchestrator.cli.output import Format, emit, format_option
from orchestrator.cluster.config import (
    CLUSTER_DIR,
    check_file,
    cluster_files,
    describe,
    node_types,
)
from orchestrator.errors import SpecError

POOL_KEYS = ["node_type", "role", "resources", "min_workers", "max_workers"]


def register(app) -> None:

    cluster_app = typer.Typer(
        help="Cluster configs: check `ray up` / KubeRay YAMLs before launching them.",
        no_args_is_help=True,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @cluster_app.command("validate")
    def validate_cmd(
        files: list[str] | None = typer.Argument(
            None, help="Cluster YAMLs (default: every *.yaml in ./cluster)."
        ),
    ) -> None:
        """Check cluster YAMLs against Ray's cluster schema and this project's rules.

        Every problem is listed with its path in the file. Exit 0 when all pass, 2 otherwise.
        """

        paths = [Path(f) for f in files] if files else cluster_files()
        if not paths:
            err_console.print(f"no cluster YAMLs given and none in ./{CLUSTER_DIR}")
            raise typer.Exit(2)
        bad = 0
        for p in paths:
            try:
                check_file(p)
            except SpecError as exc:
                bad += 1
                err_console.print(str(exc), highlight=False, markup=False, soft_wrap=True)
                continue
            console.print(
                f"[green]ok[/green]: {p} ({describe(p)})", highlight=False, soft_wrap=True
            )
        if bad:
            raise typer.Exit(2)

    @cluster_app.command("pools")
    def pools_cmd(
        file: str = typer.Argument(..., help="A `ray up` cluster YAML."),
        fmt: Format = format_option(),
    ) -> None:
        """List the node types of a `ray up` config: resources and min-max workers.

        json and csv: node_type, role, resources, min_workers, max_workers (head: null)."""

        try:
            types = node_types(file)
        except SpecError as exc:
            fail(exc)

        def role(nt) -> str:
            return "head" if nt.is_head else ("GPU pool" if nt.gpus else "CPU pool")

        records = [
            {
                "node_type": nt.name,
                "role": role(nt),
                "resources": dict(nt.resources),
                "min_workers": None if nt.is_head else nt.min_workers,
                "max_workers": None if nt.is_head else nt.max_workers,
            }
            for nt in types.values()
        ]

        def table() -> Table:
            t = Table(title=f"node types in {file}")
            for col in ("node type", "role", "resources", "workers"):
                t.add_column(col)
            for nt in types.values():
                res = ", ".join(f"{k}={v:g}" for k, v in nt.resources.items())
                span = "-" if nt.is_head else f"{nt.min_workers}-{nt.max_workers}"
                t.add_row(nt.name, role(nt), res, span)
            return t

        emit(fmt, records, table, keys=POOL_KEYS)

    app.add_typer(cluster_app, name="cluster")
