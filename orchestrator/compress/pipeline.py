"""The compression pipeline: the stages in order, the output folder and the ledger rows.

    compress_model(model, adapter, spec, out_dir)   # any nn.Module; returns a CompressResult
    compress_checkpoint(path, spec, workload)       # `orch compress`: load, compress, record
    run_after_training(section, workload, summary)  # `orch run` with a `compress:` section

Stages, each optional, each measured after it runs: low-rank, prune, fine-tune, int8, then
exports. Output: `<run_dir>/compress_<timestamp>/` (or spec.out) with model.pt (the whole
module, torch.load with weights_only=False), report.json, report.md, and model.onnx /
model.int8.onnx / model.pt2 when exported. Ledger rows (records.py): kind=compress
(parent_run = the source run) and kind=export (parent_run = the compress row).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import rundir
from orchestrator.compress.adapters import Adapter, adapter_for_workload
from orchestrator.compress.checkpoint import load_checkpoint
from orchestrator.compress.export import export_all
from orchestrator.compress.finetune import finetune
from orchestrator.compress.lowrank import low_rank
from orchestrator.compress.measure import measure
from orchestrator.compress.prune import prune_model
from orchestrator.compress.quantize import quantization_api, quantize_int8
from orchestrator.compress.records import headline, record_ledger, source_run_id
from orchestrator.compress.report import (
    CompressResult,
    markdown_table,
    notes_text,
    print_report,
    row_line,
)
from orchestrator.compress.spec import CompressSpec, parse_spec
from orchestrator.errors import CheckpointError


def compress_model(
    model,
    adapter: Adapter,
    spec: CompressSpec,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> CompressResult:
    """Run the stages of `spec` on `model` (a copy; the original is untouched), measuring after
    each. Writes model.pt, report.json, report.md and exports to `out_dir` when given."""
    import torch

    log = log or (lambda _m: None)
    model = copy.deepcopy(model).eval()
    reps = spec.latency_repeats
    rows = [measure("original", model, adapter, reps)]
    if adapter.evaluate is None:
        rows[0].notes.append("no task metric: the workload defines no compress_eval(model, config)")
    log(row_line(rows[-1]))
    layers, exclude = spec.layers, spec.exclude

    if spec.wants_low_rank:
        t0 = time.perf_counter()
        notes = low_rank(model, spec.low_rank, spec.low_rank_energy, layers, exclude)
        rows.append(measure("low-rank", model, adapter, reps, notes, time.perf_counter() - t0))
        log(row_line(rows[-1]))

    pruned: list[tuple[Any, str]] = []
    if spec.prune is not None:
        t0 = time.perf_counter()
        notes, pruned = prune_model(model, spec.prune, spec.structured, layers, exclude)
        rows.append(
            measure(
                "prune" + (" (structured)" if spec.structured else ""),
                model,
                adapter,
                reps,
                notes,
                time.perf_counter() - t0,
            )
        )
        log(row_line(rows[-1]))

    if spec.finetune_steps:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        notes = finetune(
            model, adapter, spec.finetune_steps, spec.finetune_lr, spec.finetune_batch_size, pruned
        )
        rows.append(measure("fine-tune", model, adapter, reps, notes, time.perf_counter() - t0))
        log(row_line(rows[-1]))

    float_model = model
    mode = None
    if spec.quantize == "int8":
        t0 = time.perf_counter()
        q, notes, mode = quantize_int8(
            copy.deepcopy(model),
            adapter,
            spec.quantize_mode,
            spec.calibration_batches,
            layers,
            exclude,
        )
        if mode == "static":
            # the GraphModule already takes the adapter's positional inputs
            qadapter = Adapter(**{**adapter.__dict__, "wrap": None})
            if adapter.wrap is not None:
                qadapter.evaluate = None
                notes.append(
                    "task metric not measured: the static int8 graph has only the "
                    "wrapped forward, not the model's own API"
                )
        else:
            qadapter = adapter
        rows.append(
            measure(
                f"int8 {mode}", q, qadapter, reps, notes, time.perf_counter() - t0, compiled=True
            )
        )
        log(row_line(rows[-1]))
        model = q

    result = CompressResult(
        rows, [], str(out_dir or ""), model, float_model, mode, quantization_api()
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model, out / "model.pt")
        result.exports = export_all(model, float_model, adapter, spec, out, static=mode == "static")
        for e in result.exports:
            log(
                f"export {e['format']}: {e['path']} ({e['size_bytes'] / 1e6:.3f} MB), max |diff| "
                f"vs PyTorch {e['max_abs_diff']:.2e}" + ("" if e["ok"] else "  [FAILED the check]")
            )
        (out / "report.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
        (out / "report.md").write_text(markdown_table(rows) + "\n\n" + notes_text(rows) + "\n")
    return result


def compress_checkpoint(
    path: str | Path,
    spec: CompressSpec,
    workload: str | None = None,
    parent_run: str | None = None,
    log: Callable[[str], None] | None = None,
    adapter: Adapter | None = None,
) -> tuple[CompressResult, str]:
    """Load a checkpoint (or a run dir's latest), compress it, write the output folder and the
    ledger rows. Returns (result, compress run_id)."""
    loaded = load_checkpoint(path, workload)
    adapter = adapter or adapter_for_workload(
        loaded.workload, loaded.module, loaded.config, loaded.model
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # Beside the checkpoints: in a bucket, written locally first and uploaded at the end.
    dest = spec.out or rundir.join(loaded.run_dir, f"compress_{stamp}")
    out = Path(tempfile.mkdtemp(prefix="orch-compress-")) if rundir.is_uri(dest) else Path(dest)
    parent = parent_run or source_run_id(loaded.run_dir)
    storage = rundir.parent(loaded.run_dir)
    run_name = rundir.basename(loaded.run_dir)
    started = time.time()
    try:
        result = compress_model(loaded.model, adapter, spec, out, log)
        if rundir.is_uri(dest):
            rundir.upload_dir(out, dest)
            result.out_dir = dest
            for e in result.exports:
                e["path"] = rundir.join(dest, Path(e["path"]).name)
    except Exception as exc:
        failed = CompressResult([], [], str(out))
        record_ledger(
            storage,
            failed,
            parent_run=parent,
            run_name=run_name,
            workload=loaded.workload,
            checkpoint=str(loaded.checkpoint_dir),
            spec=spec,
            status="FAILED",
            error=f"{type(exc).__name__}: {exc}"[:2000],
            started=started,
        )
        raise
    cid, _ = record_ledger(
        storage,
        result,
        parent_run=parent,
        run_name=run_name,
        workload=loaded.workload,
        checkpoint=str(loaded.checkpoint_dir),
        spec=spec,
        started=started,
    )
    return result, cid


def run_after_training(
    section: dict[str, Any] | None, workload: str, summary: dict[str, Any], console=None
) -> dict[str, Any] | None:
    """Called by `orch run` after a successful run whose spec has a `compress:` section
    (`section`, with the run's `workload`).
    Returns a small summary (out_dir, compress run_id, final metrics), {"error": ...} when
    compression failed (the training run stays SUCCEEDED; the ledger gets a FAILED compress
    row), or None when there is nothing to do."""
    if not section or summary.get("status") != "SUCCEEDED":
        return None
    cspec = parse_spec(section)
    source = summary.get("checkpoint") or summary.get("run_dir")
    if not source:
        raise CheckpointError("compress: the run left no checkpoint to compress")
    say = (lambda m: console.print(m, highlight=False, markup=False)) if console else None
    if console:
        console.print(f"[bold]compress[/bold] {source}")
    try:
        result, cid = compress_checkpoint(
            source, cspec, workload=workload, parent_run=summary.get("run_id"), log=say
        )
    except Exception as exc:  # noqa: BLE001 - training succeeded; its result must still stand
        error = f"{type(exc).__name__}: {exc}"
        if console:
            console.print(f"[red]compress failed[/red]: {error}", highlight=False)
        return {"error": error[:2000]}
    if console:
        print_report(result, console, title=f"compress {summary.get('run_name', '')}")
    return {"out_dir": result.out_dir, "run_id": cid, "metrics": headline(result.rows)}
