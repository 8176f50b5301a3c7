"""The ledger rows of a compression: run -> compressed model -> export.

    record_ledger(storage_path, result, parent_run=..., run_name=..., ...) -> (cid, export ids)

One kind=compress row whose parent_run is the source run (`source_run_id`: its ledger run_id,
or its run directory's name when the run was never in the ledger), with the last stage's
numbers plus original_<metric>, size_ratio and nonzero_ratio as metrics (`headline`) and the
whole report as extra; one kind=export row per export whose parent_run is the compress row.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from orchestrator import rundir
from orchestrator.compress.measure import StageRow
from orchestrator.compress.report import CompressResult
from orchestrator.compress.spec import CompressSpec


def source_run_id(run_dir: str) -> str:
    """The ledger run_id of the run that wrote `run_dir` (a local path or a URI), or the run
    dir's name if unrecorded."""
    from orchestrator import ledger

    name = rundir.basename(run_dir)
    try:
        rows = ledger.latest_by_run(rundir.parent(run_dir))
    except Exception:  # noqa: BLE001 - an unreadable ledger must not block compression
        rows = []
    matches = [
        r
        for r in rows
        if (r["run_dir"] or "").rstrip("/") == str(run_dir).rstrip("/") or r["run_name"] == name
    ]
    return matches[-1]["run_id"] if matches else name


def headline(rows: list[StageRow]) -> dict[str, Any]:
    """The ledger metrics of a compression: the last stage's numbers, the first stage's
    metrics as original_<name>, and how much smaller the model got."""
    first, last = rows[0], rows[-1]
    out: dict[str, Any] = {
        "params": last.params,
        "nonzero": last.nonzero,
        "size_bytes": last.size_bytes,
        "latency_b1_ms": last.latency_b1_ms,
        "latency_b64_ms": last.latency_b64_ms,
        "size_ratio": first.size_bytes / max(1, last.size_bytes),
        "nonzero_ratio": first.nonzero / max(1, last.nonzero),
    }
    for k, v in last.metrics.items():
        out[k] = v
    for k, v in first.metrics.items():
        out[f"original_{k}"] = v
    return out


def record_ledger(
    storage_path: str,
    result: CompressResult,
    *,
    parent_run: str,
    run_name: str,
    workload: str,
    checkpoint: str,
    spec: CompressSpec,
    status: str = "SUCCEEDED",
    error: str = "",
    started: float | None = None,
) -> tuple[str, list[str]]:
    """One kind=compress row (parent: the source run) and one kind=export row per export
    (parent: the compress row). Returns (compress run_id, export run_ids)."""
    from orchestrator import ledger

    cid = f"{run_name}.compress-{uuid.uuid4().hex[:8]}"
    ledger.record(
        storage_path,
        run_id=cid,
        run_name=f"{run_name}.compressed",
        workload=workload,
        status=status,
        start_time=started,
        end_time=time.time(),
        metrics=headline(result.rows) if result.rows else {},
        run_dir=result.out_dir,
        latest_checkpoint=rundir.join(result.out_dir, "model.pt") if result.out_dir else "",
        error=error,
        parent_run=parent_run,
        kind="compress",
        extra={
            "source_checkpoint": checkpoint,
            "spec": spec.model_dump(mode="json"),
            **result.to_dict(),
        },
    )
    eids = []
    for e in result.exports:
        eid = f"{run_name}.export-{e['format']}-{uuid.uuid4().hex[:8]}"
        ledger.record(
            storage_path,
            run_id=eid,
            run_name=f"{run_name}.{e['format']}",
            workload=workload,
            status="SUCCEEDED" if e["ok"] else "FAILED",
            end_time=time.time(),
            metrics={"max_abs_diff": e["max_abs_diff"], "size_bytes": e["size_bytes"]},
            run_dir=result.out_dir,
            latest_checkpoint=e["path"],
            parent_run=cid,
            kind="export",
            error="" if e["ok"] else "outputs differ from PyTorch",
            extra=e,
        )
        eids.append(eid)
    return cid, eids
