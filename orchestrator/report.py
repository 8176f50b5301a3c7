"""Run reports and comparisons: one self-contained HTML page per run or sweep, plus PNGs.

    orch report mnist-mlp                        # a run name under --storage-path (default runs)
    orch report runs/mnist-mlp --open            # or a run directory; prints the page's path
    orch report mnist-mlp-sweep-20250101-030000  # a sweep: its trials, linked both ways
    orch compare mnist-mlp mnist-mlp-lr3e-4      # differing spec keys, final metrics, curves
    orch runs --workload mnist_mlp --status succeeded --since 2d --sort accuracy

A run's report goes to `<run_dir>/report/`: `index.html` (the PNGs embedded as base64, so the
page can be mailed or attached alone), `curves.png` (learning curves), `throughput.png`
(samples/s, step time, memory). It shows the status and final metrics, the checkpoints, the
compression results found in the run directory (compress*.json, and ledger rows of kind
compress/export whose parent is this run), the resolved spec, and links to the run's files.
A sweep's report (`<sweep_dir>/report/`) ranks its trials by the sweep metric, overlays their
curves, and links to each trial's report; each trial's report links back to the sweep.

Everything is read from disk (the run directory and the ledger); nothing needs Ray.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import rundir
from orchestrator.errors import ExitCode, OrchestratorError

REPORT_DIR = "report"
# Keys of a metrics row that are bookkeeping or counters rather than curves.
SKIP_KEYS = {
    "step",
    "time",
    "checkpoint",
    "done",
    "finished",
    "epoch",
    "training_iteration",
    "timestamp",
    "time_this_iter_s",
    "time_total_s",
    "time_since_restore",
    "iterations_since_restore",
    "pid",
    "replayed",
    "date",
    "hostname",
    "node_ip",
    "trial_id",
    "train_run_dir",
    "checkpoint_path",
    "checkpoint_dir_name",
    "should_checkpoint",
}
# Shown first, in this order, when present.
PRIORITY = (
    "loss",
    "val_loss",
    "accuracy",
    "val_accuracy",
    "episode_return_mean",
    "chrf",
    "bleu",
    "exact_match",
    "episode_len_mean",
)
THROUGHPUT_KEYS = ("samples_per_s", "step_time_s", "tokens_per_s", "env_steps_per_s")
SYSTEM_PLOTS = ("system/cpu_rss_mb", "system/gpu_mem_mb")


class RunNotFoundError(OrchestratorError):
    """A RUN argument names neither a run directory nor a run/sweep in the ledger."""

    exit_code = ExitCode.NOT_FOUND


class ReportOptionError(OrchestratorError):
    """A command-line option of orch report/compare/runs has a value it cannot use."""

    exit_code = ExitCode.BAD_INPUT


# ---------------------------------------------------------------------------------------------
# Reading runs


@dataclass
class Run:
    name: str
    run_dir: Path
    spec: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    system: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    ledger_row: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        if self.ledger_row:
            return str(self.ledger_row.get("status") or "")
        return str(self.summary.get("status") or ("" if not self.rows else "UNKNOWN"))

    @property
    def sweep_id(self) -> str:
        return str((self.ledger_row or {}).get("sweep_id") or "")

    @property
    def final(self) -> dict[str, Any]:
        """Final metrics: the summary's, else the ledger's, else the last row's."""
        for source in (self.summary.get("metrics"), _json((self.ledger_row or {}).get("metrics"))):
            if source:
                return {
                    k: v
                    for k, v in source.items()
                    if _is_number(v) and k not in ("done", "finished")
                }
        if self.rows:
            return {
                k: v
                for k, v in self.rows[-1].items()
                if _is_number(v) and k not in ("time", "done")
            }
        return {}


def _json(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (a torn last line of a writer still running skipped)."""
    try:
        return rundir.parse_rows(path.read_text(errors="replace"))
    except OSError:
        return []


def load_run(run_dir: str | Path, ledger_row: dict[str, Any] | None = None) -> Run:
    """Everything a report shows about one run, from its directory."""
    import yaml

    d = Path(run_dir)
    spec: dict[str, Any] = {}
    if (d / "spec.resolved.yaml").exists():
        spec = yaml.safe_load((d / "spec.resolved.yaml").read_text()) or {}
    rows = rundir.read_metrics(d)
    if not rows and (d / "result.json").exists():  # a Tune trial folder
        rows = [
            {**r, "step": r.get("step", r.get("training_iteration"))}
            for r in read_jsonl(d / "result.json")
        ]
    summary: dict[str, Any] = {}
    if (d / "summary.json").exists():
        summary = _json((d / "summary.json").read_text())
    name = summary.get("run_name") or (ledger_row or {}).get("run_name") or d.name
    return Run(
        name=str(name),
        run_dir=d,
        spec=spec,
        rows=rows,
        system=read_jsonl(d / "system.jsonl"),
        summary=summary,
        ledger_row=ledger_row,
    )


def _ledger_rows(storages: list[Path]) -> list[dict[str, Any]]:
    from orchestrator import ledger

    seen: set[str] = set()
    out = []
    for s in storages:
        try:
            rows = ledger.latest_by_run(s)
        except Exception:  # noqa: BLE001 - an unreadable ledger only loses the links
            continue
        for r in rows:
            if r["run_id"] not in seen:
                seen.add(r["run_id"])
                out.append(r)
    return out


def _same(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


@dataclass
class Target:
    """What a RUN argument names: a run or a sweep, with the ledger rows that concern it."""

    kind: str  # "run" | "sweep"
    run_dir: Path
    ledger_row: dict[str, Any] | None
    rows: list[dict[str, Any]]  # every ledger row (latest per run) found near it
    storage: Path
    uri: str = ""  # a run in a bucket: where it is (run_dir is its local mirror)


SIZES_FILE = ".orch-sizes.json"  # a mirror's record of its checkpoints' real sizes


def mirror(uri: str) -> Path:
    """A local copy of a run (or sweep) directory in a bucket, for reports: every file but
    checkpoint payloads (a checkpoint keeps its marker, its state.json and, in SIZES_FILE,
    its real size), and the metrics as one metrics.jsonl. Refreshed on every call."""
    import hashlib
    import shutil

    import pyarrow.fs as pafs

    cache = Path(os.environ.get("ORCH_CACHE", Path.home() / ".cache" / "orch")) / "mirror"
    out = cache / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}-{rundir.basename(uri)}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    fs, root = rundir.filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    sizes: dict[str, int] = {}
    for info in infos:
        rel = info.path[len(root) :].lstrip("/")
        parts = rel.split("/")
        ck = next((i for i, part in enumerate(parts) if part.startswith("checkpoint_")), None)
        if info.type != pafs.FileType.File or parts[0] == rundir.METRICS_DIR:
            continue
        if ck is not None:
            key = "/".join(parts[: ck + 1])
            sizes[key] = sizes.get(key, 0) + info.size
            if parts[-1] not in (rundir.COMPLETE_MARKER, "state.json") or len(parts) != ck + 2:
                continue
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(rundir.read_bytes(rundir.join(uri, rel)))
    for key in sizes:
        (out / key).mkdir(parents=True, exist_ok=True)
    (out / SIZES_FILE).write_text(json.dumps(sizes))
    for d in {out, *(p.parent for p in out.rglob(rundir.SPEC_FILE))}:  # the run and trials
        rel = d.relative_to(out).as_posix()
        rows = rundir.read_metrics(uri if rel == "." else rundir.join(uri, rel))
        if rows:
            (d / rundir.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def resolve(target: str, storage_path: str | Path = "runs") -> Target:
    """A run directory path, or a run name / run id / sweep id under storage_path (a local
    folder or a bucket: a run in a bucket is mirrored locally, see mirror())."""
    if rundir.is_uri(target) or rundir.is_uri(storage_path):
        return _resolve_remote(target, str(storage_path))
    storage = Path(storage_path).expanduser()
    p = Path(target).expanduser()
    candidates: list[Path] = []
    if p.is_dir():
        candidates.append(p)
    elif (storage / target).is_dir():
        candidates.append(storage / target)
    storages = (
        [storage] + [c.parent for c in candidates] + [c.parent.parent.parent for c in candidates]
    )
    rows = _ledger_rows([s for s in dict.fromkeys(storages) if (s / "_ledger").is_dir()])
    if candidates:
        d = candidates[0]
        mine = [r for r in rows if r["run_dir"] and _same(r["run_dir"], d)]
        sweep = next((r for r in mine if r["kind"] == "sweep"), None)
        if sweep is not None or (d / "sweep.json").exists():
            return Target("sweep", d, sweep, rows, _storage_of(d, rows, storage))
        return Target("run", d, mine[-1] if mine else None, rows, _storage_of(d, rows, storage))
    named = [
        r
        for r in rows
        if target in (r["run_name"], r["run_id"], r["sweep_id"] if r["kind"] == "sweep" else None)
    ]
    if named:
        r = next((x for x in named if x["kind"] == "sweep"), named[-1])
        if r["run_dir"] and Path(r["run_dir"]).is_dir():
            return Target(
                "sweep" if r["kind"] == "sweep" else "run", Path(r["run_dir"]), r, rows, storage
            )
        raise RunNotFoundError(
            f"run '{target}' is in the ledger but its directory "
            f"{r['run_dir'] or '(none recorded)'} "
            "is missing"
        )
    known = sorted({r["run_name"] for r in rows if r["kind"] in ("run", "sweep")})[-8:]
    hint = f"; runs there include: {', '.join(known)}" if known else ""
    raise RunNotFoundError(
        f"no run directory '{target}' and no run or sweep of that name under {storage} "
        f"(give a run directory, or --storage-path where the runs live){hint}"
    )


def _resolve_remote(target: str, storage: str) -> Target:
    from orchestrator import ledger

    storage = storage.rstrip("/")
    if rundir.is_uri(target):
        uri, storage = target.rstrip("/"), rundir.parent(target.rstrip("/"))
    else:
        uri = rundir.join(storage, target)
    rows = ledger.latest_by_run(storage)
    if not rundir.exists(uri):
        named = [r for r in rows if target in (r["run_name"], r["run_id"], r["sweep_id"])]
        if not named or not named[-1]["run_dir"]:
            raise RunNotFoundError(
                f"no run directory '{target}' and no run or sweep of that name under {storage}"
            )
        uri = next((r for r in named if r["kind"] == "sweep"), named[-1])["run_dir"]
    local = mirror(uri)
    mine = [r for r in rows if (r["run_dir"] or "").rstrip("/") == uri]
    sweep = next((r for r in mine if r["kind"] == "sweep"), None)
    kind = "sweep" if sweep is not None or (local / "sweep.json").exists() else "run"
    return Target(kind, local, sweep or (mine[-1] if mine else None), rows, Path("."), uri)


def _storage_of(run_dir: Path, rows: list[dict[str, Any]], default: Path) -> Path:
    for cand in (run_dir.parent, run_dir.parent.parent.parent):
        if (cand / "_ledger").is_dir():
            return cand
    return default


def sweep_trials(sweep_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["sweep_id"] == sweep_id and r["kind"] != "sweep"]


# ---------------------------------------------------------------------------------------------
# Choosing what to plot


def curve_keys(rows: list[dict[str, Any]], limit: int = 6) -> list[str]:
    """Learning-curve metrics: numeric keys that are neither bookkeeping nor throughput/system."""
    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in keys and _is_number(v) and k not in SKIP_KEYS and not _is_perf(k):
                keys.append(k)
    ordered = [k for k in PRIORITY if k in keys] + sorted(k for k in keys if k not in PRIORITY)
    return ordered[:limit]


def _is_perf(key: str) -> bool:
    return (
        key.startswith("system/")
        or key in THROUGHPUT_KEYS
        or key.endswith("_per_s")
        or key.endswith("_time_s")
        or key.startswith(("perf/", "timers/", "num_"))
        or "/" in key
        and not key.startswith(("env_runners/", "evaluation/"))
    )


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """The points of one metric: a row without it (not measured yet: accuracy before the
    first evaluation), or with None, NaN or an infinity, has no point, so a curve never
    starts from a value that was not measured."""
    xs, ys = [], []
    for i, r in enumerate(rows):
        v = r.get(key)
        if not _is_number(v) or not math.isfinite(v):
            continue
        step = r.get("step")
        xs.append(float(step) if _is_number(step) else float(i))
        ys.append(float(v))
    return xs, ys


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return buf.getvalue()


def _grid(n: int, cols: int = 2):
    plt = _plt()
    cols = min(cols, max(1, n))
    nrows = math.ceil(n / cols)
    height = 3.0 * nrows
    fig, axes = plt.subplots(nrows, cols, figsize=(5.6 * cols, height), squeeze=False)
    # Fixed margins in inches (a layout engine would double the cost of each figure).
    fig.subplots_adjust(
        left=0.6 / (5.6 * cols),
        right=1 - 0.15 / (5.6 * cols),
        top=1 - 0.35 / height,
        bottom=0.5 / height,
        hspace=0.75 / 3.0 * 1.3,
        wspace=0.22,
    )
    flat = [a for row in axes for a in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_curves(
    runs: list[tuple[str, list[dict[str, Any]]]], keys: list[str], title: str = ""
) -> bytes | None:
    """One panel per metric against the step; one line per run (overlaid when several)."""
    keys = [k for k in keys if any(_series(rows, k)[0] for _, rows in runs)]
    if not keys:
        return None
    fig, axes = _grid(len(keys))
    for ax, key in zip(axes, keys, strict=False):
        for label, rows in runs:
            xs, ys = _series(rows, key)
            if xs:
                ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label, linewidth=1.4)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        axes[0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return _png(fig)


def plot_throughput(rows: list[dict[str, Any]], system: list[dict[str, Any]]) -> bytes | None:
    """Samples/s and step time against the step; the run's memory against wall time."""
    panels: list[tuple[str, list[float], list[float], str]] = []
    for key in THROUGHPUT_KEYS:
        xs, ys = _series(rows, key)
        if xs:
            panels.append((key, xs, ys, "step"))
    if system:
        t0 = min(r.get("time", 0) for r in system)
        for key in SYSTEM_PLOTS + ("system/node_mem_used_pct",):
            pts = [
                (r["time"] - t0, r[key])
                for r in system
                if _is_number(r.get(key)) and _is_number(r.get("time"))
            ]
            if pts and (key != "system/node_mem_used_pct" or len(panels) < 3):
                panels.append(
                    (key, [p[0] for p in pts], [p[1] for p in pts], "seconds since start")
                )
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    for ax, (key, xs, ys, xlabel) in zip(axes, panels, strict=False):
        ax.plot(
            xs,
            ys,
            color="tab:green" if key.startswith("system/") else "tab:orange",
            marker="." if len(xs) < 30 else None,
            linewidth=1.4,
        )
        ax.set_title(key)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    return _png(fig)


def plot_final(
    labels: list[str], values: list[float | None], metric: str, best: int | None
) -> bytes | None:
    pairs = [
        (lbl, v)
        for lbl, v in zip(labels, values, strict=False)
        if _is_number(v) and math.isfinite(v)
    ]
    if not pairs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(pairs) + 2), 3.2))
    fig.subplots_adjust(bottom=0.3, top=0.88)
    colours = ["tab:green" if labels.index(lbl) == best else "tab:blue" for lbl, _ in pairs]
    ax.bar(range(len(pairs)), [v for _, v in pairs], color=colours)
    ax.set_xticks(range(len(pairs)), [lbl for lbl, _ in pairs], rotation=30, ha="right", fontsize=7)
    ax.set_title(f"final {metric} per trial (best in green)")
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# HTML

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
  max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}
h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums} tr.best td{background:#eaf7ea}
pre{background:#f7f7f7;border:1px solid #e4e4e4;padding:10px;font-size:12px;overflow:auto;
  max-height:420px}
img{max-width:100%;border:1px solid #eee}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;color:#fff;font-size:12px}
.SUCCEEDED{background:#2e7d32}.FAILED{background:#c62828}.STOPPED{background:#ef6c00}
.RUNNING{background:#1565c0}.PENDING,.UNKNOWN{background:#777}
a{color:#1565c0} .err{color:#c62828;white-space:pre-wrap}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return f"<p class=sub>no data for {_e(alt)}</p>"
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(
    header: list[str],
    rows: list[list[Any]],
    classes: list[str] | None = None,
    raw_cols: tuple[int, ...] = (),
) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = []
        for j, v in enumerate(row):
            text = v if j in raw_cols else _e(_fmt(v))
            num = ' class="num"' if _is_number(v) else ""
            cells.append(f"<td{num}>{text}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _page(title: str, body: list[str]) -> str:
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{_e(title)}</title>"
        f"<style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<p class=sub>written by orch report, {stamp}</p></body></html>\n"
    )


def _href(from_dir: Path, to: Path) -> str:
    return html.escape(os.path.relpath(to, from_dir).replace(os.sep, "/"), quote=True)


def _ts(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return ""


# ---------------------------------------------------------------------------------------------
# Run report


def checkpoints(run: Run) -> list[dict[str, Any]]:
    """The run's checkpoint_NNNNNN folders with step, completeness, size and their metrics."""
    at = {str(r.get("checkpoint")).rsplit("/", 1)[-1]: r for r in run.rows if r.get("checkpoint")}
    latest = str(
        run.summary.get("checkpoint") or (run.ledger_row or {}).get("latest_checkpoint") or ""
    )
    out = []
    for d in sorted(run.run_dir.glob("checkpoint_*")):
        if not d.is_dir():
            continue
        sizes = (
            _json((run.run_dir / SIZES_FILE).read_text())
            if (run.run_dir / SIZES_FILE).exists()
            else {}
        )
        size = sizes.get(d.name, sum(f.stat().st_size for f in d.rglob("*") if f.is_file()))
        m = re.search(r"(\d+)$", d.name)
        row = at.get(d.name, {})
        out.append(
            {
                "name": d.name,
                "step": int(m.group(1)) if m else None,
                "complete": rundir.is_complete(d),
                "size_mb": size / 2**20,
                "metrics": {
                    k: v for k, v in row.items() if _is_number(v) and k in curve_keys([row], 4)
                },
                "latest": bool(latest) and latest.rstrip("/").endswith(d.name),
                "path": d,
            }
        )
    return out


def compression_results(run: Run, ledger_rows: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(source, data) for each compression result of this run: `orch compress` writes
    `<run_dir>/compress_<time>/report.json` (stages and exports; report.md beside it), other
    tools may leave `compress*.json` in the run dir; ledger rows of kind compress whose parent
    is this run and whose folder is not already shown add their headline metrics."""
    found: list[tuple[str, Any]] = []
    shown_dirs: set[str] = set()
    patterns = (
        "compress*.json",
        "compress*/*.json",
        "*/compress*.json",
        "compress*.md",
        "compress*/*.md",
    )
    seen: set[Path] = set()
    for pat in patterns:
        for f in sorted(run.run_dir.glob(pat)):
            if f in seen or not f.is_file() or f.stat().st_size > 2_000_000:
                continue
            seen.add(f)
            if f.suffix == ".md" and any(p.suffix == ".json" for p in seen if p.parent == f.parent):
                continue  # the same table as the JSON beside it
            rel = str(f.relative_to(run.run_dir))
            try:
                data = json.loads(f.read_text()) if f.suffix == ".json" else f.read_text()
            except (json.JSONDecodeError, OSError):
                continue
            found.append((rel, data))
            shown_dirs.add(str(f.parent.resolve()))
    ids = {
        run.name,
        str(run.run_dir),
        str((run.ledger_row or {}).get("run_id") or ""),
        str(run.summary.get("run_id") or ""),
    } - {""}
    for r in ledger_rows:
        if r["kind"] != "compress" or r["parent_run"] not in ids:
            continue
        if r["run_dir"] and str(Path(r["run_dir"]).resolve()) in shown_dirs:
            continue
        found.append((f"ledger: {r['run_name']} ({r['status']})", _json(r["metrics"])))
    return found


def _render_data(data: Any) -> str:
    if isinstance(data, str):
        return f"<pre>{_e(data)}</pre>"
    if isinstance(data, dict):
        lists = {
            k: v
            for k, v in data.items()
            if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)
        }
        rest = {k: v for k, v in data.items() if k not in lists and not isinstance(v, (dict, list))}
        if lists:
            parts = [_render_data(rest)] if rest else []
            for k, v in lists.items():
                parts.append(f"<p class=sub>{_e(k)}</p>" + _render_data(v))
            return "\n".join(parts)
        flat = _flatten(data)
        return _table(["key", "value"], [[k, v] for k, v in flat.items()])
    if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        cols: list[str] = []
        for x in data:
            for k in _flatten(x):
                if k not in cols:
                    cols.append(k)
        return _table(cols, [[_flatten(x).get(c, "") for c in cols] for x in data])
    return f"<pre>{_e(json.dumps(data, indent=2, default=str))}</pre>"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    from orchestrator.tracking import flatten

    return flatten(d, prefix)


def _links(out_dir: Path, run: Run) -> list[str]:
    links = []
    for name in (
        "spec.resolved.yaml",
        "plan.yaml",
        "metrics.jsonl",
        "system.jsonl",
        "summary.json",
    ):
        if (run.run_dir / name).exists():
            links.append(f'<a href="{_href(out_dir, run.run_dir / name)}">{name}</a>')
    return links


def render_run(
    run: Run,
    out_dir: Path,
    *,
    sweep_link: tuple[str, Path] | None = None,
    ledger_rows: list[dict[str, Any]] | None = None,
) -> tuple[str, dict[str, bytes]]:
    """The HTML page and the PNGs {file name: bytes} of one run's report."""
    pngs: dict[str, bytes] = {}
    keys = curve_keys(run.rows)
    curves = plot_curves([(run.name, run.rows)], keys)
    if curves:
        pngs["curves.png"] = curves
    perf = plot_throughput(run.rows, run.system)
    if perf:
        pngs["throughput.png"] = perf
    status = run.status or "UNKNOWN"
    spec = run.spec
    lr = run.ledger_row or {}
    body = [f"<h1>{_e(run.name)} <span class='badge {_e(status)}'>{_e(status)}</span></h1>"]
    facts = [f"workload <b>{_e(spec.get('workload', lr.get('workload', '?')))}</b>"]
    res = spec.get("resources") or {}
    if res:
        facts.append(
            f"{_e(res.get('workers'))} worker(s), "
            f"{_e(spec.get('strategy'))}/{_e(spec.get('precision'))}"
        )
    if run.summary.get("wall_time_s"):
        facts.append(f"wall time {run.summary['wall_time_s']:.1f} s")
    if lr.get("start_time"):
        facts.append(f"started {_ts(lr['start_time'])}")
    facts.append(f"run dir <code>{_e(run.run_dir)}</code>")
    workers = run.summary.get("workers") or []
    if workers:  # placement: which Ray node each rank ran on (its last attempt)
        where = [(w.get("rank"), str(w.get("node_id") or w.get("host"))[:12]) for w in workers]
        facts.append(
            "workers " + ", ".join(f"rank {r} on node <code>{_e(n)}</code>" for r, n in where)
        )
    if run.summary.get("restarts"):
        facts.append(
            f"<b>{run.summary['restarts']} restart(s)</b>, the last resumed from step "
            f"{_e(run.summary.get('resumed_from_step'))}"
        )
    body.append("<p class=sub>" + " &middot; ".join(facts) + "</p>")
    if sweep_link:
        label, target = sweep_link
        body.append(
            f'<p>&larr; trial of sweep <a class="sweep-link" '
            f'href="{_href(out_dir, target)}">{_e(label)}</a></p>'
        )
    if run.summary.get("error") or lr.get("error"):
        body.append(f"<p class=err>{_e(run.summary.get('error') or lr.get('error'))}</p>")

    final = run.final
    body.append("<h2>Final metrics</h2>")
    body.append(
        _table(["metric", "value"], [[k, v] for k, v in sorted(final.items())])
        if final
        else "<p class=sub>no metrics recorded</p>"
    )
    body.append("<h2>Learning curves</h2>")
    body.append(_img(curves, "learning curves"))
    body.append("<h2>Throughput and memory</h2>")
    body.append(_img(perf, "throughput"))

    cks = checkpoints(run)
    body.append("<h2>Checkpoints</h2>")
    if cks:
        body.append(
            _table(
                ["checkpoint", "step", "complete", "size (MB)", "metrics at save"],
                [
                    [
                        f'<a href="{_href(out_dir, c["path"])}">{_e(c["name"])}</a>'
                        + (" (latest)" if c["latest"] else ""),
                        c["step"],
                        "yes" if c["complete"] else "NO",
                        round(c["size_mb"], 2),
                        ", ".join(f"{k}={_fmt(v)}" for k, v in c["metrics"].items()),
                    ]
                    for c in cks
                ],
                raw_cols=(0,),
            )
        )
    else:
        body.append("<p class=sub>no checkpoints in the run directory</p>")

    comp = compression_results(run, ledger_rows or [])
    if comp:
        body.append("<h2>Compression</h2>")
        for source, data in comp:
            body.append(f"<p class=sub>{_e(source)}</p>" + _render_data(data))

    tracking = (
        _json((run.run_dir / "tracking.json").read_text())
        if (run.run_dir / "tracking.json").exists()
        else {}
    )
    body.append("<h2>Files and tracking</h2><p>" + " &middot; ".join(_links(out_dir, run)) + "</p>")
    tb = list(run.run_dir.glob("events.out.tfevents.*"))
    lines = []
    if tb:
        lines.append(
            f"TensorBoard: <code>tensorboard --logdir {_e(run.run_dir)}</code> "
            f"({len(tb)} event file(s))"
        )
    ml = tracking.get("mlflow") or {}
    if ml:
        lines.append(
            f"MLflow: run <code>{_e(ml.get('run_id'))}</code> in experiment "
            f"<code>{_e(ml.get('experiment'))}</code> at <code>{_e(ml.get('uri'))}</code>"
        )
    if lines:
        body.append("<p>" + "<br>".join(lines) + "</p>")
    body.append("<h2>Resolved spec</h2>")
    spec_text = (
        (run.run_dir / "spec.resolved.yaml").read_text()
        if (run.run_dir / "spec.resolved.yaml").exists()
        else ""
    )
    body.append(f"<pre>{_e(spec_text) or 'no spec.resolved.yaml'}</pre>")
    return _page(f"orch report: {run.name}", body), pngs


# ---------------------------------------------------------------------------------------------
# Sweep report


def _sweep_meta(sweep_dir: Path, sweep_row: dict[str, Any] | None) -> dict[str, Any]:
    meta = (
        _json((sweep_dir / "sweep.json").read_text()) if (sweep_dir / "sweep.json").exists() else {}
    )
    best = (
        _json((sweep_dir / "best.json").read_text()) if (sweep_dir / "best.json").exists() else {}
    )
    extra = _json((sweep_row or {}).get("extra"))
    sweep_sec = (meta.get("spec") or {}).get("sweep") or {}
    return {
        "metric": best.get("metric") or extra.get("metric") or sweep_sec.get("metric"),
        "mode": best.get("mode") or extra.get("mode") or sweep_sec.get("mode") or "max",
        "best_trial": best.get("best_trial") or extra.get("best_trial"),
        "spec": meta.get("spec") or {},
        "keys": list((sweep_sec.get("search_space") or {}).keys()),
        "best": best,
    }


def _trial_dir(row: dict[str, Any], sweep_dir: Path) -> Path | None:
    if row.get("run_dir") and Path(row["run_dir"]).is_dir():
        return Path(row["run_dir"])
    extra = _json(row.get("extra"))
    for name in (extra.get("trial_name"), extra.get("trial_id")):  # trials/<name>/ since issue 23
        if name and (sweep_dir / "trials" / name).is_dir():
            return sweep_dir / "trials" / name
    return None


def write_sweep_report(target: Target, out_dir: Path | None = None) -> Path:
    sweep_dir = target.run_dir
    sweep_row = target.ledger_row
    sweep_id = (sweep_row or {}).get("sweep_id") or sweep_dir.name
    out_dir = Path(out_dir or sweep_dir / REPORT_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = _sweep_meta(sweep_dir, sweep_row)
    metric, mode = meta["metric"], meta["mode"]
    trials = sweep_trials(sweep_id, target.rows)
    runs: list[tuple[dict[str, Any], Run | None]] = []
    for row in trials:
        d = _trial_dir(row, sweep_dir)
        runs.append((row, load_run(d, row) if d else None))
    # Trials absent from the ledger (a sweep made by hand, or rows lost): the trials/ folders.
    known = {str(r.run_dir.resolve()) for _, r in runs if r is not None}
    for d in sorted((sweep_dir / "trials").glob("*")) if (sweep_dir / "trials").is_dir() else []:
        if d.is_dir() and str(d.resolve()) not in known:
            runs.append(
                ({"run_name": d.name, "status": "", "extra": "{}", "metrics": "{}"}, load_run(d))
            )

    def value(row, run):
        m = {**_json(row.get("metrics")), **((run.final if run else {}) or {})}
        return m.get(metric) if metric else None

    vals = [value(row, run) for row, run in runs]
    order = sorted(
        range(len(runs)),
        key=lambda i: (
            not _is_number(vals[i]),
            -(vals[i] or 0) if mode == "max" and _is_number(vals[i]) else (vals[i] or 0),
        ),
    )
    runs = [runs[i] for i in order]
    vals = [vals[i] for i in order]
    best_idx = 0 if vals and _is_number(vals[0]) else None

    # Each trial's own report, linking back here.
    sweep_index = out_dir / "index.html"
    trial_pages: list[Path | None] = []
    for _row, run in runs:
        if run is None:
            trial_pages.append(None)
            continue
        page = write_run_report(run, sweep_link=(sweep_id, sweep_index), ledger_rows=target.rows)
        trial_pages.append(page)

    labels = [_trial_label(row, run) for row, run in runs]
    keys = meta["keys"] or _differing_keys([r.spec for _, r in runs if r is not None])
    pngs: dict[str, bytes] = {}
    curve_metrics = [metric] if metric else []
    with_rows = [
        (lbl, run.rows)
        for lbl, (_, run) in zip(labels, runs, strict=False)
        if run is not None and run.rows
    ]
    for k in curve_keys([r for _, rows in with_rows for r in rows], 3):
        if k not in curve_metrics:
            curve_metrics.append(k)
    curves = plot_curves(with_rows, curve_metrics[:4])
    if curves:
        pngs["sweep_curves.png"] = curves
    bars = plot_final(labels, vals, metric or "metric", best_idx)
    if bars:
        pngs["sweep_final.png"] = bars

    status = (sweep_row or {}).get("status") or "UNKNOWN"
    body = [
        f"<h1>sweep {_e(sweep_id)} <span class='badge {_e(status)}'>{_e(status)}</span></h1>",
        f"<p class=sub>{len(runs)} trial(s) &middot; metric <b>{_e(metric)}</b> ({_e(mode)}) "
        f"&middot; search over {_e(', '.join(keys) or '?')} &middot; "
        f"sweep dir <code>{_e(sweep_dir)}</code></p>",
    ]
    if best_idx is not None:
        body.append(
            f"<p>best trial: <b>{_e(labels[best_idx])}</b> with {_e(metric)} = "
            f"{_e(_fmt(vals[best_idx]))}</p>"
        )
    header = ["#", "trial", "status"] + keys + [metric or "metric", "report"]
    table_rows, classes = [], []
    for i, ((row, run), page) in enumerate(zip(runs, trial_pages, strict=False)):
        cfg = _json(row.get("extra")).get("config") or {}
        spec_flat = _flatten(run.spec) if run else {}
        link = f'<a class="trial-link" href="{_href(out_dir, page)}">report</a>' if page else "-"
        table_rows.append(
            [i + 1, labels[i], row.get("status") or (run.status if run else "")]
            + [cfg.get(k, spec_flat.get(k, "")) for k in keys]
            + [vals[i] if vals[i] is not None else "-", link]
        )
        classes.append("best" if i == best_idx else "")
    body.append("<h2>Trials</h2>")
    body.append(_table(header, table_rows, classes, raw_cols=(len(header) - 1,)))
    body.append("<h2>Curves of every trial</h2>" + _img(curves, "trial curves"))
    body.append("<h2>Final metric per trial</h2>" + _img(bars, "final metric per trial"))
    if meta["spec"]:
        import yaml

        body.append(
            "<h2>Sweep spec</h2><pre>"
            + _e(yaml.safe_dump(meta["spec"], sort_keys=False))
            + "</pre>"
        )
    for name, data in pngs.items():
        (out_dir / name).write_bytes(data)
    sweep_index.write_text(_page(f"orch report: sweep {sweep_id}", body))
    return sweep_index


def _trial_label(row: dict[str, Any], run: Run | None) -> str:
    extra = _json(row.get("extra"))
    tid = extra.get("trial_name") or extra.get("trial_id")  # <sweep_id>-<n>-<hash>, or older ids
    return str(tid or row.get("run_name") or (run.name if run else "?"))


# ---------------------------------------------------------------------------------------------
# Entry points


def write_run_report(
    run: Run,
    out_dir: Path | None = None,
    *,
    sweep_link: tuple[str, Path] | None = None,
    ledger_rows: list[dict[str, Any]] | None = None,
) -> Path:
    out_dir = Path(out_dir or run.run_dir / REPORT_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    page, pngs = render_run(run, out_dir, sweep_link=sweep_link, ledger_rows=ledger_rows)
    for name, data in pngs.items():
        (out_dir / name).write_bytes(data)
    index = out_dir / "index.html"
    index.write_text(page)
    return index


def report(
    target: str, storage_path: str | Path = "runs", out_dir: str | Path | None = None
) -> Path:
    """Write the report of a run or a sweep; returns the path of its index.html."""
    t = resolve(target, storage_path)
    if t.uri and out_dir is None:  # a run in a bucket: the page here, a copy beside the run
        out_dir = Path.cwd() / "reports" / rundir.basename(t.uri)
    if t.kind == "sweep":
        index = write_sweep_report(t, Path(out_dir) if out_dir else None)
        _upload_report(t, index)
        return index
    run = load_run(t.run_dir, t.ledger_row)
    sweep_link = None
    if run.sweep_id:
        sweep_row = next(
            (r for r in t.rows if r["kind"] == "sweep" and r["sweep_id"] == run.sweep_id), None
        )
        if sweep_row and sweep_row["run_dir"]:
            sweep_link = (run.sweep_id, Path(sweep_row["run_dir"]) / REPORT_DIR / "index.html")
    index = write_run_report(
        run, Path(out_dir) if out_dir else None, sweep_link=sweep_link, ledger_rows=t.rows
    )
    _upload_report(t, index)
    return index


def _upload_report(t: Target, index: Path) -> None:
    if t.uri:
        rundir.upload_dir(index.parent, rundir.join(t.uri, REPORT_DIR))


# ---------------------------------------------------------------------------------------------
# Compare


def _differing_keys(specs: list[dict[str, Any]], ignore: tuple[str, ...] = ("name",)) -> list[str]:
    flats = [_flatten(s) for s in specs]
    keys: list[str] = []
    for f in flats:
        for k in f:
            if k not in keys:
                keys.append(k)
    missing = object()
    return [
        k
        for k in keys
        if k not in ignore
        and len(
            {
                json.dumps(
                    f.get(k, missing) if f.get(k, missing) is not missing else "<unset>",
                    default=str,
                    sort_keys=True,
                )
                for f in flats
            }
        )
        > 1
    ]


def compare(runs: list[Run]) -> dict[str, Any]:
    """{"runs": names, "spec": {key: [values]}, "metrics": {key: [values]}} for differing spec
    keys and every final metric any of the runs has."""
    keys = _differing_keys([r.spec for r in runs])
    flats = [_flatten(r.spec) for r in runs]
    metrics: list[str] = []
    for r in runs:
        for k in r.final:
            if k not in metrics:
                metrics.append(k)
    ordered = [k for k in PRIORITY if k in metrics] + sorted(
        k for k in metrics if k not in PRIORITY
    )
    return {
        "runs": [r.name for r in runs],
        "status": [r.status for r in runs],
        "spec": {k: [f.get(k, "<unset>") for f in flats] for k in keys},
        "metrics": {k: [r.final.get(k) for r in runs] for k in ordered},
    }


def compare_png(runs: list[Run], metrics: list[str] | None = None) -> bytes | None:
    if not metrics:
        common = None
        for r in runs:
            ks = set(curve_keys(r.rows, 50))
            common = ks if common is None else common & ks
        metrics = [
            k
            for k in curve_keys([row for r in runs for row in r.rows], 50)
            if k in (common or set())
        ][:4]
    return plot_curves([(r.name, r.rows) for r in runs], metrics)


def _labels(runs: list[Run]) -> list[str]:
    names = [r.name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{r.name} ({r.run_dir.parent.name})" for r in runs]


# ---------------------------------------------------------------------------------------------
# orch runs: filters and sorting

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`30m`, `2h`, `7d`, `1w`, or an ISO date/time (`2025-01-31`, `2025-01-31T08:00`)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    m = _SINCE.match(text)
    if m:
        n, unit = float(m.group(1)), m.group(2)
        secs = n * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
        return now - dt.timedelta(seconds=secs)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportOptionError(
            f"--since: expected a duration like 30m, 2h, 7d or an ISO date like 2025-01-31 "
            f"(given {text!r})"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as people type it
    return when


def select_runs(
    rows: list[dict[str, Any]],
    *,
    workload: str | None = None,
    status: str | None = None,
    since: str | None = None,
    sweep: str | None = None,
    kind: str | None = None,
    sort: str | None = None,
    ascending: bool = False,
    limit: int | None = None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Filter ledger rows (latest per run) and sort them by a final metric.

    status and kind take comma-separated lists; sweep matches a sweep id (the sweep's own row
    and its trials); rows without the sort metric go last."""
    from orchestrator.ledger import JobStatus

    out = list(rows)
    if workload:
        wanted = {w.strip() for w in workload.split(",") if w.strip()}
        out = [r for r in out if r["workload"] in wanted]
    if status:
        wanted = {s.strip().upper() for s in status.split(",") if s.strip()}
        bad = wanted - {s.value for s in JobStatus}
        if bad:
            raise ReportOptionError(
                "--status: expected one or more of "
                f"{', '.join(s.value.lower() for s in JobStatus)} "
                f"(given {', '.join(sorted(bad)).lower()})"
            )
        out = [r for r in out if r["status"] in wanted]
    if kind:
        wanted = {k.strip() for k in kind.split(",") if k.strip()}
        out = [r for r in out if r["kind"] in wanted]
    if sweep:
        out = [r for r in out if r["sweep_id"] == sweep]
    if since:
        cut = parse_since(since, now)
        out = [
            r
            for r in out
            if (r["start_time"] or r["event_time"]) is not None
            and (r["start_time"] or r["event_time"]) >= cut
        ]
    if sort:

        def key(r):
            v = _json(r["metrics"]).get(sort)
            if not _is_number(v) or (isinstance(v, float) and math.isnan(v)):
                return (1, 0.0)
            return (0, v if ascending else -v)

        out.sort(key=key)
    if limit:
        out = out[:limit]
    return out
