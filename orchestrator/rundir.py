"""The run directory: the one owner of its names, its checkpoints and its metrics file.

    <storage_path>/<run name>/
        spec.resolved.yaml   plan.yaml   summary.json
        metrics.jsonl        one JSON row per logged step, appended by one writer at a time
        checkpoint_NNNNNN/   complete once `_COMPLETE` is in it (written last)

Everything that names a file of a run, decides whether a path is a URI, finds the newest
complete checkpoint or reads, appends and truncates `metrics.jsonl` goes through here, so a
reader and a writer never disagree (a torn last line, left by a killed writer, is skipped by
every reader and dropped by every truncation).

A storage path may be a local folder (or an NFS mount) or a URI (s3://, gs://). A URI never
passes through pathlib: `Path("s3://b/runs")` is `s3:/b/runs`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from orchestrator.errors import CheckpointError

COMPLETE_MARKER = "_COMPLETE"
METRICS_FILE = "metrics.jsonl"
SPEC_FILE = "spec.resolved.yaml"
PLAN_FILE = "plan.yaml"
SUMMARY_FILE = "summary.json"
CHECKPOINT_PREFIX = "checkpoint_"


# -- local path or URI -----------------------------------------------------------------------


def is_uri(path: str | os.PathLike | None) -> bool:
    """Whether `path` is a URI (s3://bucket/runs, gs://..., file://...) rather than a local
    path. The one place this is decided."""
    return path is not None and "://" in str(path)


def resolve_storage(storage_path: str, base: Path | None = None) -> str:
    """An absolute local path (relative ones from `base`, default the current folder), or the
    URI unchanged."""
    if is_uri(storage_path):
        return storage_path
    p = Path(storage_path).expanduser()
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    return str(p.resolve())


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base/part/...` for a local path or a URI alike."""
    out = str(base).rstrip("/")
    for part in parts:
        out = f"{out}/{str(part).strip('/')}"
    return out


def run_dir(storage_path: str, run_name: str) -> str:
    return join(storage_path, run_name)


# -- checkpoints -----------------------------------------------------------------------------


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def marker_files(checkpoint: str | os.PathLike) -> list[str] | None:
    """The files a checkpoint's `_COMPLETE` marker lists (empty for a marker that lists none,
    as RLlib checkpoints' do); None when the marker is missing or unreadable."""
    marker = Path(checkpoint) / COMPLETE_MARKER
    try:
        text = marker.read_text()
    except OSError:
        return None
    if not text.strip():
        return []
    try:
        return list(json.loads(text).get("files", []))
    except (json.JSONDecodeError, AttributeError):
        return None


def missing_files(checkpoint: str | os.PathLike) -> list[str] | None:
    """Files the marker lists that are not on disk; None without a readable marker."""
    files = marker_files(checkpoint)
    if files is None:
        return None
    d = Path(checkpoint)
    return [f for f in files if not (d / f).exists()]


def is_complete(checkpoint: str | os.PathLike) -> bool:
    """A checkpoint is complete when its marker (written last) is there and every file the
    marker lists is on disk (a merge of several ranks' directories can stop half-way)."""
    return missing_files(checkpoint) == []


def complete_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The run's complete checkpoint_* directories, oldest first."""
    d = Path(run_dir)
    if is_uri(run_dir) or not d.is_dir():
        return []
    return sorted(
        (c for c in d.glob(f"{CHECKPOINT_PREFIX}*") if c.is_dir() and is_complete(c)),
        key=lambda c: c.name,
    )


def latest_complete(run_dir: str | os.PathLike, before: str | None = None) -> Path | None:
    """The newest complete checkpoint of a run (with `before`, the newest whose name sorts
    before that one), or None. The one definition of "the checkpoint to resume from"."""
    done = [c for c in complete_checkpoints(run_dir) if before is None or c.name < before]
    return done[-1] if done else None


def looks_like_checkpoint(path: str | os.PathLike) -> bool:
    """A directory that is a checkpoint itself (complete or not), not a run directory."""
    p = Path(path)
    return p.name.startswith(CHECKPOINT_PREFIX) or any(
        (p / f).exists() for f in (COMPLETE_MARKER, "model.pt", "state.json")
    )


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory as given (it must be complete), or a run directory's newest
    complete checkpoint. Raises CheckpointError naming the path and what was expected."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or run directory")
    if looks_like_checkpoint(p):
        missing = missing_files(p)
        if missing is None:
            raise CheckpointError(
                f"checkpoint {p} is incomplete (no readable {COMPLETE_MARKER}): it was still "
                "being written, or its run was killed while saving; pass the run directory to "
                "use its newest complete checkpoint"
            )
        if missing:
            raise CheckpointError(f"checkpoint {p} is incomplete: missing {', '.join(missing[:5])}")
        return p
    found = latest_complete(p)
    if found is None:
        raise CheckpointError(
            f"{p}: not a checkpoint (no {COMPLETE_MARKER}) and holds no complete "
            f"{CHECKPOINT_PREFIX}NNNNNN/ directory"
        )
    return found


def read_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's state.json ({} when it has none)."""
    f = Path(checkpoint) / "state.json"
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# -- metrics.jsonl ---------------------------------------------------------------------------


def metrics_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / METRICS_FILE


def parse_rows(text: str) -> list[dict[str, Any]]:
    """JSON rows of a metrics file; a line cut short by a killed writer is skipped."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every whole row of the run's metrics.jsonl ([] when there is none)."""
    try:
        return parse_rows(metrics_path(run_dir).read_text())
    except OSError:
        return []


def append_metrics(run_dir: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one row (a whole line in one write)."""
    path = metrics_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, default=float) + "\n"
    with open(path, "a") as fh:
        fh.write(line)


def truncate_metrics(run_dir: str | os.PathLike, after_step: int) -> None:
    """Keep only the rows up to `after_step` (a resumed run recomputes the rest); torn lines
    go too. Atomic: the file is replaced, never rewritten in place."""
    path = metrics_path(run_dir)
    if not path.exists():
        return
    keep = [r for r in read_metrics(run_dir) if _step(r) <= after_step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in keep))
    os.replace(tmp, path)


def _step(row: dict[str, Any]) -> float:
    step = row.get("step", -1)
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else -1


# -- the other files -------------------------------------------------------------------------


def write_text(run_dir: str | os.PathLike, name: str, text: str) -> Path:
    """Write one file of the run directory atomically (temp file + rename)."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, d / name)
    return d / name


def write_json(run_dir: str | os.PathLike, name: str, obj: Any) -> Path:
    return write_text(run_dir, name, json.dumps(obj, indent=2, default=str))


def read_json(run_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    try:
        data = json.loads((Path(run_dir) / name).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
