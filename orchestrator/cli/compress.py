"""`orch compress`: prune, factorize, fine-tune, quantize and export a trained checkpoint."""

from __future__ import annotations

import typer

from orchestrator.cli.console import console, fail
from orchestrator.compress.pipeline import compress_checkpoint
from orchestrator.compress.report import print_report
from orchestrator.compress.spec import parse_spec
from orchestrator.errors import OrchestratorError


def register(app) -> None:

    @app.command("compress")
    def compress_cmd(
        checkpoint: str = typer.Argument(
            ..., help="A checkpoint_NNNNNN/ dir, or a run dir (latest)."
        ),
        prune: float | None = typer.Option(None, "--prune", help="Fraction of weights to remove."),
        structured: bool = typer.Option(False, "--structured", help="Remove neurons/channels."),
        quantize: str | None = typer.Option(None, "--quantize", help="int8"),
        quantize_mode: str = typer.Option("auto", "--quantize-mode", help="auto|dynamic|static"),
        low_rank: float | None = typer.Option(None, "--low-rank", help="Rank ratio, e.g. 0.5."),
        low_rank_energy: float | None = typer.Option(
            None, "--low-rank-energy", help="Or: kept-energy fraction, e.g. 0.9."
        ),
        finetune_steps: int = typer.Option(0, "--finetune-steps", help="Steps after pruning."),
        finetune_lr: float = typer.Option(1e-4, "--finetune-lr"),
        export: list[str] | None = typer.Option(
            None, "--export", help="onnx|pt2 (repeat; torchscript: an old name for pt2)."
        ),
        layers: list[str] | None = typer.Option(
            None, "--layers", help="Module-name globs to touch."
        ),
        exclude: list[str] | None = typer.Option(
            None, "--exclude", help="Module-name globs to skip."
        ),
        calibration_batches: int = typer.Option(8, "--calibration-batches"),
        latency_repeats: int = typer.Option(20, "--latency-repeats"),
        workload: str | None = typer.Option(None, "--workload", help="When the run dir lacks it."),
        out: str | None = typer.Option(None, "--out", help="Output folder."),
    ) -> None:
        """Prune, factorize, fine-tune, quantize and export a trained checkpoint; print a
        before/after table (params, non-zero, size, CPU latency at batch 1 and 64, metric)
        and record ledger rows linked to the source run.

            orch compress runs/mnist-mlp --prune 0.9 --finetune-steps 300 --quantize int8
            orch compress runs/mnist-mlp --low-rank 0.5 --export onnx --export pt2
        """

        formats = [f.strip() for item in (export or []) for f in item.split(",") if f.strip()]
        data = {
            "prune": prune,
            "structured": structured,
            "quantize": quantize,
            "quantize_mode": quantize_mode,
            "low_rank": low_rank,
            "low_rank_energy": low_rank_energy,
            "finetune_steps": finetune_steps,
            "finetune_lr": finetune_lr,
            "export": formats,
            "layers": layers or [],
            "exclude": exclude or [],
            "calibration_batches": calibration_batches,
            "latency_repeats": latency_repeats,
            "out": out,
        }
        try:
            spec = parse_spec(data, source="orch compress flags")
            console.print(f"[bold]orch compress[/bold] {checkpoint}")
            result, cid = compress_checkpoint(
                checkpoint,
                spec,
                workload=workload,
                log=lambda m: console.print(m, highlight=False, markup=False),
            )
        except OrchestratorError as exc:
            fail(exc)
        print_report(result, console, title=f"compress {checkpoint}")
        console.print(f"output: {result.out_dir}   ledger: {cid}", highlight=False, markup=False)
        if any(not e["ok"] for e in result.exports):
            raise typer.Exit(1)
