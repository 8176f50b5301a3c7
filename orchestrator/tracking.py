"""Experiment tracking: every run's metrics, hyper-parameters and system figures go to
TensorBoard event files in its run directory, and to MLflow when the spec names a tracking URI.

    tensorboard --logdir runs                    # every run under runs/, one TensorBoard run each
    orch run jobs/mnist_mlp.yaml tracking.mlflow=sqlite:///$PWD/runs/mlflow.db
    mlflow ui --backend-store-uri sqlite:///$PWD/runs/mlflow.db

The spec's optional section (all keys optional):

    tracking:
      tensorboard: true              # event files in the run directory (default on)
      mlflow: null                   # a tracking URI: file:///abs/mlruns, sqlite:///abs/mlflow.db,
                                     # http://mlflow.team:5000 (or a plain folder path)
      experiment: null               # MLflow experiment name (default: the spec's name)
      system_every_s: 2.0            # sample CPU RSS / GPU memory every N s (0: off)
      tags: {}                       # extra MLflow tags

How it works: the workers already write one JSON row per log to `<run_dir>/metrics.jsonl` (rank
0, see orchestrator/worker/session.py). The launcher runs a `RunTracker` in the driver that
tails that file, so nothing changes inside the training loop and a tracking backend that fails
can never stop training: it is switched off with one warning. Every numeric key of a row
becomes a scalar of the same name (loss, accuracy, samples_per_s, step_time_s, ...) at the
row's `step`; the figures the tracker samples itself (RSS of this node's Ray workers, GPU
memory from nvidia-smi) are named `system/...` and are also kept in `<run_dir>/system.jsonl`
for reports. At the end the flattened resolved spec goes to TensorBoard's HParams plugin (with
the final metrics) and to MLflow params; the MLflow run gets its status, tags and the spec as
artifact.

A rerun of the same run name (a resume) continues the same MLflow run (its id is kept in
`<run_dir>/tracking.json`); TensorBoard drops the steps that the resumed run recomputes
(its event reader purges orphaned steps when a step goes backwards).

Tune trials use Ray's own logger callbacks instead (`tune_callbacks`): TBXLoggerCallback and
ray.air.integrations.mlflow.MLflowLoggerCallback, which log each trial's reported results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator import rundir

SYSTEM_FILE = "system.jsonl"
STATE_FILE = "tracking.json"
# Row keys that are bookkeeping, not metrics.
NOT_METRICS = {"step", "time", "checkpoint", "done"}
_URI_SCHEMES = ("file", "sqlite", "http", "https", "databricks", "postgresql", "mysql", "mssql")


class TrackingSpec(BaseModel):
    """The spec's `tracking:` section."""

    model_config = ConfigDict(extra="forbid")

    tensorboard: bool = Field(
        True, description="Write TensorBoard event files in the run directory."
    )
    mlflow: str | None = Field(
        None,
        description="MLflow tracking URI (file:///abs/path, sqlite:///abs/mlflow.db, "
        "http(s)://server); a plain folder path means a file store there. null: no MLflow.",
    )
    experiment: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="MLflow experiment (default: the spec's name).",
    )
    system_every_s: float = Field(
        2.0, ge=0, le=3600, description="Seconds between samples of CPU RSS / GPU memory; 0: off."
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Extra MLflow tags.")

    @field_validator("mlflow")
    @classmethod
    def _known_uri(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip()
        if not v:
            raise ValueError("expected a tracking URI or a folder path, or null for no MLflow")
        if rundir.is_uri(v):
            scheme = v.split("://", 1)[0].split("+", 1)[0].lower()
            if scheme not in _URI_SCHEMES:
                raise ValueError(
                    f"expected a URI with scheme {', '.join(_URI_SCHEMES)} "
                    f"(given scheme {scheme!r})"
                )
        return v


def settings(spec_or_section: Any) -> TrackingSpec:
    """The TrackingSpec of a JobSpec, a spec dict or a `tracking:` dict (None: defaults)."""
    section = spec_or_section
    if hasattr(section, "tracking"):
        section = section.tracking
    elif isinstance(section, dict) and ("workload" in section or "name" in section):
        section = section.get("tracking")
    if isinstance(section, TrackingSpec):
        return section
    return TrackingSpec.model_validate(section or {})


def resolve_uri(uri: str, base: Path | None = None) -> str:
    """Plain paths become absolute file:// URIs; relative sqlite paths become absolute."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        return "sqlite:///" + str(((base or Path.cwd()) / rel).resolve())
    if rundir.is_uri(uri):
        return uri
    return Path(base or Path.cwd()).joinpath(uri).expanduser().resolve().as_uri()


# ---------------------------------------------------------------------------------------------
# Flattening


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def hparams_of(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's flattened keys as TensorBoard/MLflow-friendly scalars (lists, None -> text)."""
    out = {}
    for k, v in flatten(spec).items():
        if isinstance(v, bool) or isinstance(v, (int, float, str)):
            out[k] = v
        else:
            out[k] = json.dumps(v, default=str)
    return out


def numeric_items(row: dict[str, Any]) -> dict[str, float]:
    """The row's metrics: finite-or-not numbers, bools excluded, bookkeeping keys excluded."""
    out = {}
    for k, v in row.items():
        if k in NOT_METRICS or isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
    return out


# ---------------------------------------------------------------------------------------------
# System figures


def _gpu_figures() -> dict[str, float]:
    """GPU memory and utilisation of this node from nvidia-smi (no CUDA context in the driver)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    try:
        out = subprocess.run(
            [
                exe,
                "--query-gpu=memory.used,memory.total,utilization.gpu",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    used = total = util = 0.0
    n = 0
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            used += float(parts[0])
            total += float(parts[1])
            util += float(parts[2])
            n += 1
        except (ValueError, IndexError):
            continue
    if not n:
        return {}
    return {
        "system/gpu_mem_mb": used,
        "system/gpu_mem_total_mb": total,
        "system/gpu_util_pct": util / n,
    }


_RAY_INFRA = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _session_dir() -> str | None:
    """The Ray session folder this driver is connected to (None when Ray is not up)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        node = ray._private.worker.global_worker.node
        return node.get_session_dir_path() if node is not None else None
    except Exception:  # noqa: BLE001 - private API; without it every local raylet counts
        return None


def _ray_worker_procs(session_dir: str | None):
    """Busy Ray worker processes (`ray::Actor.method`, idle workers and Ray's agents excluded)
    started by this node's raylet of our Ray session (other Ray instances on the node, e.g.
    another user's, are not counted)."""
    import psutil

    raylets = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = proc.info.get("cmdline") or []
            if (
                cmd
                and cmd[0].endswith("/raylet")
                and (session_dir is None or any(session_dir in part for part in cmd))
            ):
                raylets.append(proc)
        except (psutil.Error, KeyError):
            continue
    for raylet in raylets:
        try:
            children = raylet.children(recursive=True)
        except psutil.Error:
            continue
        for child in children:
            try:
                cmd = child.cmdline()
                if cmd and cmd[0].startswith("ray::") and not cmd[0].startswith(_RAY_INFRA):
                    yield child
            except psutil.Error:
                continue


def sample_system(session_dir: str | None = None) -> dict[str, float]:
    """One sample of this node: summed RSS of our Ray session's busy worker processes, node
    memory and CPU use, the driver's RSS, and GPU figures when nvidia-smi is present. On a
    multi-node cluster these are the driver node's figures only."""
    import psutil

    rss = 0
    workers = 0
    for proc in _ray_worker_procs(session_dir):
        try:
            rss += proc.memory_info().rss
            workers += 1
        except psutil.Error:
            continue
    # No busy worker (before the workers start, after Ray shut down): no RSS figure at all,
    # rather than a misleading 0.
    out = (
        {"system/cpu_rss_mb": rss / 2**20, "system/ray_worker_procs": float(workers)}
        if workers
        else {}
    )
    out |= {
        "system/node_mem_used_pct": psutil.virtual_memory().percent,
        "system/cpu_util_pct": psutil.cpu_percent(interval=None),
        "system/driver_rss_mb": psutil.Process().memory_info().rss / 2**20,
    }
    out.update(_gpu_figures())
    return out


# ---------------------------------------------------------------------------------------------
# Backends


class _EventWriter:
    """TensorBoard event files without torch: the same protos torch.utils.tensorboard's
    SummaryWriter writes (scalars as simple values, text, hparams), through TensorBoard's own
    EventFileWriter. The driver never imports torch for them (~1.3 s of every `orch run`'s
    start on this machine; bench/cold_start.py)."""

    def __init__(self, log_dir: str, flush_secs: int = 5):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.events = EventFileWriter(log_dir, max_queue_size=10, flush_secs=flush_secs)

    def add_event(self, event) -> None:
        self.events.add_event(event)

    def add_summary(self, summary, step: int = 0, wall: float | None = None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        wall = time.time() if wall is None else wall
        self.events.add_event(Event(summary=summary, step=int(step), wall_time=wall))

    def add_scalar(self, tag: str, value: float, step: int, wall: float | None = None) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self.add_summary(
            Summary(value=[Summary.Value(tag=tag, simple_value=float(value))]), step, wall
        )

    def add_text(self, tag: str, text: str, step: int = 0) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

        meta = SummaryMetadata(
            plugin_data=SummaryMetadata.PluginData(
                plugin_name="text", content=TextPluginData(version=0).SerializeToString()
            )
        )
        tensor = TensorProto(
            dtype="DT_STRING",
            string_val=[text.encode("utf-8")],
            tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]),
        )
        value = Summary.Value(tag=f"{tag}/text_summary", metadata=meta, tensor=tensor)
        self.add_summary(Summary(value=[value]), step)

    def add_hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """The HParams plugin's experiment, session start and session end summaries."""
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams import metadata as hp_meta
        from tensorboard.plugins.hparams.api_pb2 import (
            DataType,
            Experiment,
            HParamInfo,
            MetricInfo,
            MetricName,
            Status,
        )
        from tensorboard.plugins.hparams.plugin_data_pb2 import (
            HParamsPluginData,
            SessionEndInfo,
            SessionStartInfo,
        )

        start = SessionStartInfo()
        infos = []
        for k, v in params.items():
            if isinstance(v, bool):
                start.hparams[k].bool_value = v
                kind = "DATA_TYPE_BOOL"
            elif isinstance(v, (int, float)):
                start.hparams[k].number_value = float(v)
                kind = "DATA_TYPE_FLOAT64"
            elif isinstance(v, str):
                start.hparams[k].string_value = v
                kind = "DATA_TYPE_STRING"
            else:
                continue
            infos.append(HParamInfo(name=k, type=DataType.Value(kind)))
        experiment = Experiment(
            hparam_infos=infos, metric_infos=[MetricInfo(name=MetricName(tag=k)) for k in metrics]
        )
        end = SessionEndInfo(status=Status.Value("STATUS_SUCCESS"))
        for tag, data in (
            (hp_meta.EXPERIMENT_TAG, HParamsPluginData(experiment=experiment)),
            (hp_meta.SESSION_START_INFO_TAG, HParamsPluginData(session_start_info=start)),
            (hp_meta.SESSION_END_INFO_TAG, HParamsPluginData(session_end_info=end)),
        ):
            data.version = hp_meta.PLUGIN_DATA_VERSION
            meta = SummaryMetadata(
                plugin_data=SummaryMetadata.PluginData(
                    plugin_name=hp_meta.PLUGIN_NAME, content=data.SerializeToString()
                )
            )
            self.add_summary(Summary(value=[Summary.Value(tag=tag, metadata=meta)]))

    def flush(self) -> None:
        self.events.flush()

    def close(self) -> None:
        self.events.close()


class _TensorBoard:
    """Event files in the run directory. A URI run dir gets them written to a local folder
    first and uploaded (whole files, at most every `upload_every` s, and at the end)."""

    def __init__(self, run_dir: str, upload_every: float = 10.0):
        import tempfile

        self.run_dir, self.upload_every, self._uploaded = run_dir, upload_every, 0.0
        self.staging = tempfile.mkdtemp(prefix="orch-tb-") if rundir.is_uri(run_dir) else None
        self.writer = _EventWriter(self.staging or run_dir, flush_secs=5)

    def _upload(self, force: bool = False) -> None:
        if self.staging and (force or time.time() - self._uploaded > self.upload_every):
            self.writer.flush()
            rundir.upload_dir(self.staging, self.run_dir)
            self._uploaded = time.time()

    def scalars(self, values: dict[str, float], step: int, wall: float | None) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step, wall)

    def restart(self, step: int) -> None:
        """Mark a restart at `step`: TensorBoard's reader drops what was logged at or after
        it (a resumed run recomputes those steps)."""
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        self.writer.add_event(
            Event(
                step=int(step),
                wall_time=time.time(),
                session_log=SessionLog(status=SessionLog.START),
            )
        )

    def text(self, tag: str, body: str) -> None:
        self.writer.add_text(tag, body, 0)

    def hparams(self, params: dict[str, Any], final: dict[str, float], status: str) -> None:
        # Written into this run (not a sub-run as SummaryWriter.add_hparams does), so the
        # HParams plugin reads the metric columns from this run's own scalars of those names.
        self.writer.add_hparams(params, final)
        self.writer.add_text("status", status, 0)

    def flush(self) -> None:
        self.writer.flush()
        self._upload()

    def close(self) -> None:
        self.writer.close()
        self._upload(force=True)
        if self.staging:
            import shutil

            shutil.rmtree(self.staging, ignore_errors=True)


class _MLflow:
    BATCH = 900  # MLflow accepts at most 1,000 metrics per log_batch

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        tags: dict[str, str],
        run_dir: Path,
        params: dict[str, Any],
    ):
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store only on request; it is what works with no server.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = ensure_experiment(self.client, uri, experiment)
        state = _read_state(run_dir).get("mlflow") or {}
        self.run_id = None
        if state.get("uri") == uri and state.get("run_id"):
            try:  # a resumed run continues its MLflow run
                self.client.get_run(state["run_id"])
                self.run_id = state["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
            except Exception:  # noqa: BLE001 - deleted or foreign: start a new one
                self.run_id = None
        if self.run_id is None:
            self.run_id = self.client.create_run(
                self.experiment_id, run_name=run_name, tags=tags
            ).info.run_id
        else:
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, v)
        _write_state(
            run_dir,
            {
                "mlflow": {
                    "uri": uri,
                    "run_id": self.run_id,
                    "experiment_id": self.experiment_id,
                    "experiment": experiment,
                }
            },
        )
        self._log_params(params)
        self.pending: list[Any] = []

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new, changed = [], {}
        for k, v in params.items():
            text = str(v)[:6000]
            if k not in existing:
                new.append(Param(k, text))
            elif existing[k] != text:
                changed[f"orch.changed.{k}"] = text  # params are immutable in MLflow
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100])
        for k, v in changed.items():
            self.client.set_tag(self.run_id, k, v)

    def scalars(self, values: dict[str, float], step: int, wall: float | None) -> None:
        from mlflow.entities import Metric

        ts = int((wall or time.time()) * 1000)
        self.pending.extend(Metric(k, v, ts, int(step)) for k, v in values.items())

    def flush(self) -> None:
        while self.pending:
            chunk, self.pending = self.pending[: self.BATCH], self.pending[self.BATCH :]
            self.client.log_batch(self.run_id, metrics=chunk)

    def finish(self, status: str, run_dir: str) -> None:
        import tempfile

        self.flush()
        self.client.set_tag(self.run_id, "orch.status", status)
        with tempfile.TemporaryDirectory(prefix="orch-mlflow-") as tmp:
            for name in ("spec.resolved.yaml", "summary.json"):
                try:
                    path = Path(tmp) / name
                    path.write_bytes(rundir.read_bytes(rundir.join(run_dir, name)))
                    self.client.log_artifact(self.run_id, str(path))
                except FileNotFoundError:
                    continue
                except Exception as exc:  # noqa: BLE001 - artifacts are a nicety
                    warnings.warn(f"MLflow: could not upload {name}: {exc}", stacklevel=2)
        mlflow_status = {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "STOPPED": "KILLED"}.get(
            status, "FINISHED"
        )
        self.client.set_terminated(self.run_id, mlflow_status)


def ensure_experiment(client, uri: str, name: str) -> str:
    """The id of experiment `name`, created if missing. With SQLite the artifacts go to a
    folder beside the database (MLflow's default would be ./mlruns in the current folder)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        location = (db.parent / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # noqa: BLE001 - created meanwhile by a concurrent trial
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _read_state(run_dir: str) -> dict[str, Any]:
    return rundir.read_json(run_dir, STATE_FILE)


def _write_state(run_dir: str, update: dict[str, Any]) -> None:
    rundir.write_json(run_dir, STATE_FILE, {**_read_state(run_dir), **update})


# ---------------------------------------------------------------------------------------------
# The tracker


class RunTracker:
    """Sends one run's metric rows to TensorBoard and MLflow from the driver.

        tracker = RunTracker(run_dir, spec_dict, run_name=..., run_id=...)
        tracker.start()                 # opens backends; tails metrics.jsonl in a thread
        tracker.log_row({"step": 10, "loss": 0.3})    # launchers without metrics.jsonl
        tracker.finish("SUCCEEDED", final_metrics)

    Rows already in metrics.jsonl when it starts are skipped (an earlier launch sent them);
    pass `from_start=True` to send the whole file (converting a finished run after the fact).
    """

    def __init__(
        self,
        run_dir: str | Path,
        spec: dict[str, Any],
        *,
        run_name: str,
        run_id: str = "",
        workload: str = "",
        sweep_id: str = "",
        kind: str = "run",
        config: TrackingSpec | None = None,
        console=None,
        from_start: bool = False,
        tail: bool = True,
        poll_every: float = 1.0,
    ):
        self.run_dir = str(run_dir)
        self.spec = spec
        self.config = config or settings(spec)
        self.run_name, self.run_id, self.sweep_id, self.kind = run_name, run_id, sweep_id, kind
        self.workload = workload or str(spec.get("workload", ""))
        self.console = console
        self.tail = tail
        self.poll_every = poll_every
        # Rows already there when it starts were sent by an earlier launch (from_start: send
        # them too); the first new step is where TensorBoard's history restarts.
        before = [] if from_start else rundir.read_metrics(self.run_dir)
        self._first_step = int(rundir._step(before[-1])) + 1 if before else 0
        self._rows_tail = rundir.MetricsTail(self.run_dir, from_start=from_start)
        self._sent: list[dict[str, Any]] = []  # replayed to MLflow when it opens late
        self._system: list[dict[str, Any]] = []  # system.jsonl of a URI run dir, whole
        self.backends: dict[str, Any] = {}
        self.last_step = 0
        self.last_time: float | None = None
        self.rows = 0
        self.rows_sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._opener: threading.Thread | None = None
        self._last_sample = 0.0
        self._session: str | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> RunTracker:
        """Open TensorBoard now and MLflow in the tracker thread (a slow or unreachable
        tracking server, or a new SQLite store creating its tables, never delays training)."""
        if not rundir.is_uri(self.run_dir):
            Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        if self.config.tensorboard:
            self._open("tensorboard", lambda: _TensorBoard(self.run_dir))
            if "tensorboard" in self.backends:
                self.backends["tensorboard"].restart(self._first_step)
                self.backends["tensorboard"].text("spec", "```yaml\n" + _yaml(self.spec) + "\n```")
        if self.tail and self.config.mlflow:
            self._opener = threading.Thread(
                target=self._open_mlflow, name="orch-mlflow", daemon=True
            )
            self._opener.start()
        else:
            self._open_mlflow()
        if self.tail and (self.backends or self.config.mlflow):
            self._thread = threading.Thread(target=self._loop, name="orch-tracker", daemon=True)
            self._thread.start()
        return self

    def _open_mlflow(self) -> None:
        if not self.config.mlflow:
            return
        uri = resolve_uri(self.config.mlflow)
        tags = {
            "orch.run_name": self.run_name,
            "orch.run_id": self.run_id,
            "orch.workload": self.workload,
            "orch.kind": self.kind,
            "orch.run_dir": self.run_dir,
            **self.config.tags,
        }
        if self.sweep_id:
            tags["orch.sweep_id"] = self.sweep_id
        experiment = self.config.experiment or str(self.spec.get("name") or self.run_name)
        backend = None
        try:
            backend = _MLflow(
                uri, experiment, self.run_name, tags, self.run_dir, hparams_of(self.spec)
            )
        except Exception as exc:  # noqa: BLE001 - tracking never stops a run
            self._warn(f"mlflow tracking is off for this run: {type(exc).__name__}: {exc}")
        if backend is not None:
            with self._lock:
                # Rows sent while MLflow was opening go to MLflow alone, first.
                if self.rows_sent:
                    self._replay_to(backend)
                self.backends["mlflow"] = backend

    def _replay_to(self, backend) -> None:
        for row in self._sent:
            step, values, wall = self._values(row)
            backend.scalars(values, step, wall)
        backend.flush()

    def finish(self, status: str, metrics: dict[str, Any] | None = None) -> None:
        """Send the remaining rows, the hyper-parameters with the final metrics, the status."""
        self._stop.set()
        if self._opener is not None:
            self._opener.join(timeout=300)  # MLflow retries an unreachable server ~2 min
            if self._opener.is_alive():
                self._warn("MLflow is still connecting; giving up on it for this run")
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.poll()
        if self._system:
            try:
                rundir.write_text(
                    self.run_dir, SYSTEM_FILE, "".join(json.dumps(r) + "\n" for r in self._system)
                )
            except rundir.StorageError:
                pass
        final = numeric_items(metrics or {})
        if "tensorboard" in self.backends:
            self._safe("tensorboard", lambda b: b.hparams(hparams_of(self.spec), final, status))
        if "mlflow" in self.backends:
            self._safe("mlflow", lambda b: b.finish(status, self.run_dir))
        for name in list(self.backends):
            self._safe(name, lambda b: b.flush())
            b = self.backends.pop(name, None)
            if b is not None and hasattr(b, "close"):
                try:
                    b.close()
                except Exception:  # noqa: BLE001
                    pass

    # -- rows ----------------------------------------------------------------------------

    def poll(self) -> int:
        """Send the whole rows written since the last poll; returns how many. A history cut
        back by a restarted worker group (rows past its checkpoint dropped, to be recomputed)
        marks a restart in TensorBoard, whose reader then drops the steps after it."""
        with self._lock:
            try:
                rows, restarted = self._rows_tail.poll()
            except Exception:  # noqa: BLE001 - storage hiccup: the next poll catches up
                return 0
            if restarted is not None:
                self._safe("tensorboard", lambda b: b.restart(restarted + 1))
            for row in rows:
                self._send(row)
            if rows:
                for name in list(self.backends):
                    self._safe(name, lambda b: b.flush())
            return len(rows)

    def log_row(self, row: dict[str, Any]) -> None:
        """Send one row directly (for launchers that do not write metrics.jsonl)."""
        with self._lock:
            self._send(row)
            for name in list(self.backends):
                self._safe(name, lambda b: b.flush())

    def _values(self, row: dict[str, Any]) -> tuple[int, dict[str, float], float | None]:
        step = row.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            step = self.last_step + 1
        wall = row.get("time") if isinstance(row.get("time"), (int, float)) else None
        return int(step), numeric_items(row), wall

    def _send(self, row: dict[str, Any]) -> None:
        step, values, wall = self._values(row)
        self.last_step = step
        if wall is not None:
            self.last_time = float(wall)
        self.rows += 1
        self.rows_sent += 1
        if "mlflow" not in self.backends and self.config.mlflow:
            self._sent.append(row)
        for name in list(self.backends):
            self._safe(name, lambda b: b.scalars(values, step, wall))

    # -- system figures ------------------------------------------------------------------

    def sample(self, force: bool = False) -> dict[str, float] | None:
        every = self.config.system_every_s
        now = time.time()
        if every <= 0 or (not force and now - self._last_sample < every):
            return None
        self._last_sample = now
        if self._session is None:
            self._session = _session_dir() or ""
        try:
            values = sample_system(self._session or None)
        except Exception:  # noqa: BLE001 - psutil on an odd platform: no system figures
            return None
        row = {"time": now, "step": self.last_step, **values}
        try:
            if rundir.is_uri(self.run_dir):  # no append on object storage: the file, whole
                self._system.append(row)
                if len(self._system) % 10 == 1:
                    rundir.write_text(
                        self.run_dir,
                        SYSTEM_FILE,
                        "".join(json.dumps(r) + "\n" for r in self._system),
                    )
            else:
                with open(Path(self.run_dir) / SYSTEM_FILE, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
        except (OSError, rundir.StorageError):
            pass
        with self._lock:
            for name in list(self.backends):
                self._safe(name, lambda b: b.scalars(values, self.last_step, now))
        return values

    # -- plumbing ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self.sample()
            self._stop.wait(self.poll_every)

    def _open(self, name: str, factory) -> None:
        try:
            self.backends[name] = factory()
        except Exception as exc:  # noqa: BLE001 - tracking never stops a run
            self._warn(f"{name} tracking is off for this run: {type(exc).__name__}: {exc}")

    def _safe(self, name: str, fn) -> None:
        backend = self.backends.get(name)
        if backend is None:
            return
        try:
            fn(backend)
        except Exception as exc:  # noqa: BLE001 - tracking never stops a run
            self.backends.pop(name, None)
            self._warn(f"{name} tracking stopped: {type(exc).__name__}: {exc}")

    def _warn(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"[yellow]warning[/yellow]: {text}", highlight=False)
        else:
            warnings.warn(text, stacklevel=3)


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Hooks for launchers


def start(plan, *, run_id: str = "", sweep_id: str = "", console=None) -> RunTracker | None:
    """Start tracking a RunPlan's run (Ray Train or RLlib launcher), local run dir or bucket
    alike. None when tracking is wholly off. Never raises."""
    try:
        spec = plan.resolved_spec
        cfg = settings(spec)
        if not cfg.tensorboard and not cfg.mlflow:
            return None
        kind = "trial" if sweep_id else "run"
        return RunTracker(
            plan.run_dir,
            spec,
            run_name=plan.run_name,
            run_id=run_id,
            workload=plan.workload,
            sweep_id=sweep_id,
            kind=kind,
            config=cfg,
            console=console,
        ).start()
    except Exception as exc:  # noqa: BLE001 - tracking never stops a run
        warnings.warn(f"tracking is off for this run: {type(exc).__name__}: {exc}", stacklevel=2)
        return None


def finish(tracker: RunTracker | None, summary: dict[str, Any]) -> None:
    """Close a tracker started with `start`, given the launcher's summary dict. Never raises."""
    if tracker is None:
        return
    try:
        tracker.finish(str(summary.get("status", "")), summary.get("metrics") or {})
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"tracking did not finish cleanly: {type(exc).__name__}: {exc}", stacklevel=2)


def track_finished_run(run_dir: str | Path, *, status: str = "", console=None) -> RunTracker:
    """Convert a finished run's metrics.jsonl after the fact (e.g. a run made before tracking
    was configured, or by a launcher without the hook): `orch track RUN`-style backfill."""
    import yaml

    run_dir = str(run_dir)
    spec = yaml.safe_load(rundir.read_text(rundir.join(run_dir, rundir.SPEC_FILE))) or {}
    summary = rundir.read_json(run_dir, rundir.SUMMARY_FILE)
    tracker = RunTracker(
        run_dir,
        spec,
        run_name=summary.get("run_name") or rundir.basename(run_dir),
        run_id=summary.get("run_id", ""),
        console=console,
        from_start=True,
        tail=False,
    )
    tracker.config = tracker.config.model_copy(update={"system_every_s": 0})
    tracker.start()
    tracker.finish(status or summary.get("status", "SUCCEEDED"), summary.get("metrics") or {})
    return tracker


def tune_callbacks(
    spec: dict[str, Any] | Any, *, experiment: str | None = None, tags: dict[str, str] | None = None
) -> list[Any]:
    """Ray Tune's own logger callbacks for a sweep's Tuner(run_config=RunConfig(callbacks=...)):
    TBXLoggerCallback (TensorBoard events in each trial's folder) and, with `tracking.mlflow`,
    MLflowLoggerCallback (one MLflow run per trial, config as params, results as metrics)."""
    spec_dict = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
    cfg = settings(spec_dict)
    callbacks: list[Any] = []
    if cfg.tensorboard:
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    if cfg.mlflow:
        uri = resolve_uri(cfg.mlflow)
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        name = experiment or cfg.experiment or str(spec_dict.get("name") or "orch-sweep")
        ensure_experiment(MlflowClient(tracking_uri=uri), uri, name)
        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=uri, experiment_name=name, tags={**cfg.tags, **(tags or {})}
            )
        )
    return callbacks
