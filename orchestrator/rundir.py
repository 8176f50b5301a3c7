"""The run directory: the one owner of its names, its storage, its checkpoints and its metrics.

    <storage_path>/<run name>/
        spec.resolved.yaml   plan.yaml   summary.json
        metrics.jsonl        a local (or NFS) run dir: one JSON row per logged step
        metrics/             a URI run dir: the same rows, one object per flush (see below)
        checkpoint_NNNNNN/   complete once `_COMPLETE` is in it (written last)
    <storage_path>/_ledger/  the ledger (orchestrator/ledger.py), through the same filesystems

A storage path is a local folder (or an NFS mount) or a URI (s3://, gs://, ...). Everything
that reads or writes run state goes through here, on pyarrow's filesystems
(`pyarrow.fs.FileSystem.from_uri`, what Ray Train itself uses for checkpoints), so a local
path and a bucket behave alike. A URI never passes through pathlib: `Path("s3://b/runs")` is
`s3:/b/runs`. `is_uri` is the one place that tells them apart.

Writes are whole: a local file is written to a temp file and renamed, an object is one PUT
(atomic on object storage). Object storage has no append, so on a URI run dir the metrics are
chunks `metrics/NNNNNNNNNN.jsonl`, written by rank 0 every few seconds; a resume that drops
the rows past its checkpoint writes a `NNNNNNNNNN.base.jsonl` with the rows it keeps, and
readers start from the newest base. Every reader skips a torn line.

A storage call that fails (an endpoint that does not answer, a bucket that is gone) is tried
again for ORCH_STORAGE_RETRY_S seconds (60 by default), then raised as a StorageError naming
the path and what to check; `check_storage` does the same once, quickly, before a run starts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.errors import CheckpointError, ExitCode, OrchestratorError

COMPLETE_MARKER = "_COMPLETE"
METRICS_FILE = "metrics.jsonl"
METRICS_DIR = "metrics"
SPEC_FILE = "spec.resolved.yaml"
PLAN_FILE = "plan.yaml"
SUMMARY_FILE = "summary.json"
CHECKPOINT_PREFIX = "checkpoint_"
RETRY_ENV = "ORCH_STORAGE_RETRY_S"


class StorageError(OrchestratorError):
    """The storage path cannot be reached, or refuses what orch asks of it."""

    exit_code = ExitCode.UNREACHABLE


# -- local path or URI -----------------------------------------------------------------------


def is_uri(path: str | os.PathLike | None) -> bool:
    """Whether `path` is a URI (s3://bucket/runs, gs://..., file://...) rather than a local
    path. The one place this is decided."""
    return path is not None and "://" in str(path)


def resolve_storage(storage_path: str, base: Path | None = None) -> str:
    """An absolute local path (relative ones from `base`, default the current folder), or the
    URI unchanged."""
    if is_uri(storage_path):
        return storage_path.rstrip("/")
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


def basename(path: str | os.PathLike) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def parent(path: str | os.PathLike) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[0]


def run_dir(storage_path: str, run_name: str) -> str:
    return join(storage_path, run_name)


# -- filesystems -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _fs_for(root: str):
    import pyarrow.fs as pafs

    fs, _ = pafs.FileSystem.from_uri(root)
    return fs


def filesystem(path: str | os.PathLike):
    """(pyarrow filesystem, the path within it) for a local path or a URI."""
    import pyarrow.fs as pafs

    path = str(path)
    if not is_uri(path):
        return pafs.LocalFileSystem(), os.path.abspath(path)
    scheme, rest = path.split("://", 1)
    if scheme == "file":
        return pafs.LocalFileSystem(), "/" + rest.lstrip("/")
    bucket = rest.split("/", 1)[0]
    try:
        fs = _fs_for(f"{scheme}://{bucket}")
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise StorageError(f"{path}: {_reason(exc)}") from None
    return fs, rest.rstrip("/")


def uri_of(fs, path: str) -> str:
    """The path or URI of `path` within pyarrow filesystem `fs` (a Ray Checkpoint's
    .filesystem and .path), as every function here takes it."""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        return path
    scheme = {"gcs": "gs"}.get(fs.type_name, fs.type_name)
    return f"{scheme}://{path.lstrip('/')}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:400]


def _retry(what: str, fn, retry_s: float | None = None):
    """fn() tried again on OSError for ORCH_STORAGE_RETRY_S seconds, then a StorageError."""
    if not is_uri(what):  # a local disk does not come back by waiting
        retry_s = 0
    budget = float(os.environ.get(RETRY_ENV, "60")) if retry_s is None else retry_s
    deadline = time.monotonic() + budget
    delay = 0.5
    while True:
        try:
            return fn()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise StorageError(
                    f"{what}: {_reason(exc)} (retried {budget:.0f} s; {RETRY_ENV} sets how long)"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def exists(path: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    info = _retry(str(path), lambda: fs.get_file_info(p))
    return info.type != pafs.FileType.NotFound


def is_dir(path: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    return _retry(str(path), lambda: fs.get_file_info(p)).type == pafs.FileType.Directory


def list_dir(path: str | os.PathLike) -> list[tuple[str, bool]]:
    """(name, is a directory) of each entry of a folder or prefix; [] when there is none."""
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    sel = pafs.FileSelector(p, allow_not_found=True, recursive=False)
    infos = _retry(str(path), lambda: fs.get_file_info(sel))
    return sorted((basename(i.path), i.type == pafs.FileType.Directory) for i in infos)


def read_bytes(path: str | os.PathLike) -> bytes:
    fs, p = filesystem(path)

    def read():
        # A random-access file reads an object in one ranged GET; an unbuffered input stream
        # took ~100x longer for 70 MB from an S3 server here (bench/storage.py).
        with fs.open_input_file(p) as fh:
            return fh.read()

    return _retry(str(path), read)


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode(errors="replace")


def write_bytes(path: str | os.PathLike, data: bytes, retry_s: float | None = None) -> str:
    """Write one file or object whole: locally a temp file renamed into place, on object
    storage one PUT."""
    path = str(path)
    if not is_uri(path) or path.startswith("file://"):
        _, local = filesystem(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tmp = f"{os.path.dirname(local)}/.{os.path.basename(local)}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, local)
        return path
    fs, p = filesystem(path)

    def put():
        with fs.open_output_stream(p) as fh:
            fh.write(data)

    _retry(path, put, retry_s)
    return path


def write_text(run_dir: str | os.PathLike, name: str, text: str) -> str:
    """One file of the run directory, written whole."""
    return write_bytes(join(run_dir, name), text.encode())


def write_json(run_dir: str | os.PathLike, name: str, obj: Any) -> str:
    return write_text(run_dir, name, json.dumps(obj, indent=2, default=str))


def read_json(run_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    try:
        data = json.loads(read_text(join(run_dir, name)))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def delete(path: str | os.PathLike) -> None:
    """Remove a file or a whole folder/prefix; nothing when it is not there."""
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    info = _retry(str(path), lambda: fs.get_file_info(p))
    if info.type == pafs.FileType.Directory:
        _retry(str(path), lambda: fs.delete_dir(p))
    elif info.type == pafs.FileType.File:
        _retry(str(path), lambda: fs.delete_file(p))


def upload_dir(local: str | os.PathLike, dest: str) -> None:
    """Copy a local folder to `dest` (a local path or a URI), file by file."""
    for root, _dirs, files in os.walk(local):
        for f in files:
            src = os.path.join(root, f)
            rel = os.path.relpath(src, local)
            with open(src, "rb") as fh:
                write_bytes(join(dest, rel), fh.read())


def download_dir(src: str, local: str | os.PathLike) -> Path:
    """Copy a folder or prefix (local path or URI) into a local folder."""
    import pyarrow.fs as pafs

    fs, p = filesystem(src)
    out = Path(local)
    sel = pafs.FileSelector(p, allow_not_found=False, recursive=True)
    for info in _retry(src, lambda: fs.get_file_info(sel)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(p) :].lstrip("/")
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(read_bytes(join(src, rel)))
    return out


def local_copy(path: str | os.PathLike) -> Path:
    """A local folder with the contents of `path`: the folder itself when it is local, else a
    download into ~/.cache/orch (kept, keyed by the URI, for a later call)."""
    if not is_uri(path):
        return Path(path)
    cache = Path(os.environ.get("ORCH_CACHE", Path.home() / ".cache" / "orch")) / "storage"
    key = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    out = cache / f"{key}-{basename(path)}"
    done = out / ".orch-downloaded"
    if not done.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{basename(path)}-", dir=cache))
        download_dir(str(path), tmp)
        (tmp / ".orch-downloaded").write_text(str(path))
        if out.exists():
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out


def check_storage(storage_path: str, write: bool = False) -> None:
    """Fail fast, before Ray starts and before any ledger row, when a storage path cannot be
    used: an endpoint that does not answer, a bucket that does not exist, no credentials
    (with `write`, also: no right to write)."""
    if not is_uri(storage_path):
        return
    import pyarrow.fs as pafs

    scheme = storage_path.split("://", 1)[0]
    bucket = storage_path.split("://", 1)[1].split("/", 1)[0]
    fix = {
        "s3": "set AWS_ENDPOINT_URL (for S3-compatible storage), AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (or an instance profile), and check that the bucket exists",
        "gs": "set GOOGLE_APPLICATION_CREDENTIALS (or run on a GCE/GKE node with access) and "
        "check that the bucket exists",
    }.get(scheme, "check the URI and the credentials its filesystem needs")
    if scheme == "s3" and not _aws_credentials_found():
        raise StorageError(
            f"storage_path {storage_path!r}: no AWS credentials found (no "
            "AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws/credentials, web identity "
            f"or instance profile). To fix: {fix}"
        )
    try:
        fs, _ = filesystem(storage_path)
        info = _retry(storage_path, lambda: fs.get_file_info(bucket), retry_s=0)
        if write and info.type != pafs.FileType.NotFound:  # the bucket is there; can we write?
            write_bytes(join(storage_path, "_ledger", ".orch-write-check"), b"ok", retry_s=0)
    except (StorageError, OSError) as exc:
        raise StorageError(
            f"storage_path {storage_path!r} cannot be reached: "
            f"{str(exc).split(': ', 1)[-1].split(' (retried')[0]}. "
            f"To fix: {fix}"
        ) from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(
            f"storage_path {storage_path!r}: bucket {bucket!r} does not exist "
            f"at this endpoint. To fix: {fix}"
        )


def _aws_credentials_found() -> bool:
    """Whether the AWS SDK's default chain can find credentials here: the environment, a
    profile or shared credentials file, web identity, a container or an instance profile.
    (Without any, S3 requests go out unsigned; S3 refuses them, but late and obscurely.)"""
    env = os.environ
    if (
        env.get("AWS_ACCESS_KEY_ID")
        or env.get("AWS_PROFILE")
        or env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
        or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    ):
        return True
    files = [
        env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        env.get("AWS_CONFIG_FILE", "~/.aws/config"),
    ]
    if any(Path(f).expanduser().is_file() for f in files):
        return True
    if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return False
    import socket

    try:  # an instance profile: EC2's metadata service answers on a link-local address
        with socket.create_connection(("169.254.169.254", 80), timeout=0.5):
            return True
    except OSError:
        return False


# -- checkpoints -----------------------------------------------------------------------------


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def marker_files(checkpoint: str | os.PathLike) -> list[str] | None:
    """The files a checkpoint's `_COMPLETE` marker lists (empty for a marker that lists none,
    as RLlib checkpoints' do); None when the marker is missing or unreadable."""
    try:
        text = read_text(join(checkpoint, COMPLETE_MARKER))
    except (FileNotFoundError, StorageError):
        return None
    if not text.strip():
        return []
    try:
        return list(json.loads(text).get("files", []))
    except (json.JSONDecodeError, AttributeError):
        return None


def missing_files(checkpoint: str | os.PathLike) -> list[str] | None:
    """Files the marker lists that are not there; None without a readable marker."""
    files = marker_files(checkpoint)
    if files is None:
        return None
    if not files:
        return []
    import pyarrow.fs as pafs

    fs, p = filesystem(checkpoint)
    sel = pafs.FileSelector(p, allow_not_found=True, recursive=True)
    present = {
        i.path[len(p) :].lstrip("/") for i in _retry(str(checkpoint), lambda: fs.get_file_info(sel))
    }
    return [f for f in files if f not in present]


def is_complete(checkpoint: str | os.PathLike) -> bool:
    """A checkpoint is complete when its marker (written last) is there and every file the
    marker lists is there too (a merge of several ranks' directories, or an upload to object
    storage, can stop half-way)."""
    return missing_files(checkpoint) == []


def complete_checkpoints(run_dir: str | os.PathLike) -> list[str]:
    """The run's complete checkpoint_* directories (paths or URIs), oldest first."""
    names = [n for n, d in list_dir(run_dir) if d and n.startswith(CHECKPOINT_PREFIX)]
    return [join(run_dir, n) for n in sorted(names) if is_complete(join(run_dir, n))]


def latest_complete(run_dir: str | os.PathLike, before: str | None = None) -> str | None:
    """The newest complete checkpoint of a run (with `before`, the newest whose name sorts
    before that one), or None. The one definition of "the checkpoint to resume from"."""
    names = sorted(
        (
            n
            for n, d in list_dir(run_dir)
            if d and n.startswith(CHECKPOINT_PREFIX) and (before is None or n < before)
        ),
        reverse=True,
    )
    for n in names:  # newest first: most calls look at one checkpoint only
        if is_complete(join(run_dir, n)):
            return join(run_dir, n)
    return None


def looks_like_checkpoint(path: str | os.PathLike) -> bool:
    """A directory that is a checkpoint itself (complete or not), not a run directory."""
    if basename(path).startswith(CHECKPOINT_PREFIX):
        return True
    names = {n for n, _ in list_dir(path)}
    return bool(names & {COMPLETE_MARKER, "model.pt", "state.json"})


def find_checkpoint(path: str | os.PathLike) -> str:
    """A checkpoint directory as given (it must be complete), or a run directory's newest
    complete checkpoint, as a path or URI. Raises CheckpointError naming the path and what
    was expected."""
    path = str(path) if is_uri(path) else str(Path(path).expanduser())
    if not exists(path):
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if looks_like_checkpoint(path):
        missing = missing_files(path)
        if missing is None:
            raise CheckpointError(
                f"checkpoint {path} is incomplete (no readable {COMPLETE_MARKER}): it was still "
                "being written, or its run was killed while saving; pass the run directory to "
                "use its newest complete checkpoint"
            )
        if missing:
            raise CheckpointError(
                f"checkpoint {path} is incomplete: missing {', '.join(missing[:5])}"
            )
        return path
    found = latest_complete(path)
    if found is None:
        raise CheckpointError(
            f"{path}: not a checkpoint (no {COMPLETE_MARKER}) and holds no complete "
            f"{CHECKPOINT_PREFIX}NNNNNN/ directory"
        )
    return found


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """find_checkpoint(path) as a local folder (a checkpoint in a bucket is downloaded, with
    its run's spec.resolved.yaml beside it), for what loads a model from it."""
    found = find_checkpoint(path)
    if not is_uri(found):
        return Path(found)
    local = local_copy(found)
    spec = local.parent / f"{local.name}.{SPEC_FILE}"
    if not spec.exists():
        try:
            spec.write_bytes(read_bytes(join(parent(found), SPEC_FILE)))
        except FileNotFoundError:
            pass
    return local


def run_spec_of(checkpoint: str | os.PathLike) -> Path:
    """The spec.resolved.yaml of the run a local checkpoint folder belongs to (for a
    downloaded checkpoint, the copy resolve_checkpoint put beside it)."""
    local = Path(checkpoint)
    copy = local.parent / f"{local.name}.{SPEC_FILE}"
    return copy if copy.exists() else local.parent / SPEC_FILE


def read_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's state.json ({} when it has none)."""
    return read_json(checkpoint, "state.json")


# -- attempts --------------------------------------------------------------------------------

ATTEMPTS_DIR = "attempts"


def record_attempt(run_dir: str, run_id: str, record: dict[str, Any]) -> None:
    """One start of a run's worker group (the first, or a restart after a failure): where its
    workers run and what it resumed from. One object each, so nothing is appended."""
    write_json(
        join(run_dir, ATTEMPTS_DIR),
        f"{run_id}-{time.time_ns()}.json",
        {"run_id": run_id, "time": time.time(), **record},
    )


def read_attempts(run_dir: str, run_id: str) -> list[dict[str, Any]]:
    """The attempts of launch `run_id`, oldest first."""
    names = sorted(
        n
        for n, d in list_dir(join(run_dir, ATTEMPTS_DIR))
        if not d and n.startswith(f"{run_id}-") and n.endswith(".json")
    )
    return [read_json(join(run_dir, ATTEMPTS_DIR), n) for n in names]


# -- metrics ---------------------------------------------------------------------------------


def metrics_path(run_dir: str | os.PathLike) -> Path:
    """metrics.jsonl of a local run directory."""
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


def _chunks(run_dir: str) -> tuple[list[str], int]:
    """The metric chunks a reader reads (from the newest base on), and the highest sequence."""
    names = [n for n, d in list_dir(join(run_dir, METRICS_DIR)) if not d and n.endswith(".jsonl")]
    names.sort()
    top = int(names[-1].split(".")[0]) if names else 0
    bases = [i for i, n in enumerate(names) if n.endswith(".base.jsonl")]
    return (names[bases[-1] :] if bases else names), top


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every whole row of the run's metrics ([] when there are none)."""
    if not is_uri(run_dir):
        try:
            return parse_rows(metrics_path(run_dir).read_text())
        except OSError:
            return []
    names, _ = _chunks(str(run_dir))
    rows: list[dict[str, Any]] = []
    for n in names:
        try:
            rows += parse_rows(read_text(join(run_dir, METRICS_DIR, n)))
        except FileNotFoundError:  # dropped by a truncation since the listing
            continue
    return rows


def _lines(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, default=float) + "\n" for r in rows)


def append_metrics(run_dir: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one row: a whole line in one write (on a URI run dir, one chunk object; rank 0
    uses a MetricsWriter there instead, which batches)."""
    if is_uri(run_dir):
        MetricsWriter(str(run_dir)).write([row])
        return
    path = metrics_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(_lines([row]))


def truncate_metrics(run_dir: str | os.PathLike, after_step: int) -> None:
    """Keep only the rows up to `after_step` (a resumed run recomputes the rest); torn lines
    go too. Atomic: the file is replaced (a base chunk written), never rewritten in place."""
    if is_uri(run_dir):
        MetricsWriter(str(run_dir)).truncate(after_step)
        return
    path = metrics_path(run_dir)
    if not path.exists():
        return
    rows = read_metrics(run_dir)
    keep = [r for r in rows if _step(r) <= after_step]
    if len(keep) == len(rows) and path.read_bytes().endswith(b"\n"):
        return  # nothing to drop
    tmp = path.with_suffix(".tmp")
    tmp.write_text(_lines(keep))
    os.replace(tmp, path)


def _key(row: dict[str, Any]) -> tuple:
    return (row.get("step"), row.get("time"))


def _step(row: dict[str, Any]) -> float:
    step = row.get("step", -1)
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else -1


class MetricsWriter:
    """Rank 0's metrics on a URI run dir: rows buffered and written as one chunk object every
    `flush_s` seconds (and on flush()), so logging never waits on object storage or on Ray
    Train's report barrier. A background thread does the timed flushes."""

    def __init__(self, run_dir: str, flush_s: float = 5.0):
        self.run_dir, self.flush_s = run_dir, flush_s
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._seq: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _next(self) -> int:
        if self._seq is None:
            self._seq = _chunks(self.run_dir)[1]
        self._seq += 1
        return self._seq

    def write(self, rows: list[dict[str, Any]], base: bool = False) -> None:
        suffix = ".base.jsonl" if base else ".jsonl"
        write_bytes(
            join(self.run_dir, METRICS_DIR, f"{self._next():010d}{suffix}"), _lines(rows).encode()
        )

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(row)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, daemon=True, name="orch-metrics-flush"
            )
            self._thread.start()

    def flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
            if rows:
                self.write(rows)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except StorageError as exc:  # rows stay lost for this chunk; training goes on
                print(f"[orch] metrics not written: {exc}", flush=True)

    def truncate(self, after_step: int) -> None:
        with self._lock:
            self._rows = [r for r in self._rows if _step(r) <= after_step]
            rows = read_metrics(self.run_dir)
            keep = [r for r in rows if _step(r) <= after_step]
            if len(keep) == len(rows):
                return  # nothing to drop
            names, _ = _chunks(self.run_dir)
            self.write(keep, base=True)
            for n in names:  # superseded by the base; readers already skip them
                delete(join(self.run_dir, METRICS_DIR, n))

    def close(self) -> None:
        self._stop.set()
        self.flush()


class MetricsTail:
    """New rows of a run's metrics since the last poll, local file or URI chunks alike.

    poll() returns (rows, restarted): `restarted` is the last step kept when the history was
    cut back since the last poll (a restart from a checkpoint), else None. Kept rows this
    reader had not delivered yet are delivered then, so none is lost to the cut."""

    def __init__(self, run_dir: str | os.PathLike, from_start: bool = False):
        self.run_dir = str(run_dir)
        self.uri = is_uri(self.run_dir)
        self.offset = 0
        self.inode: int | None = None
        self.seen: set[str] = set()
        self.base: str | None = None
        self.delivered: set[tuple] = set()  # (step, time) of every row delivered
        if not from_start:
            self._skip_existing()

    def _skip_existing(self) -> None:
        self.delivered = {_key(r) for r in read_metrics(self.run_dir)}
        if self.uri:
            names, _ = _chunks(self.run_dir)
            self.seen = set(names)
            self.base = next((n for n in reversed(names) if n.endswith(".base.jsonl")), None)
            return
        path = metrics_path(self.run_dir)
        if path.exists():
            st = path.stat()
            self.offset, self.inode = st.st_size, st.st_ino

    def poll(self) -> tuple[list[dict[str, Any]], int | None]:
        rows, restarted = self._poll_uri() if self.uri else self._poll_local()
        self.delivered.update(_key(r) for r in rows)
        return rows, restarted

    def _cut(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """After a cut, `rows` are the history from its start: a prefix of rows delivered
        before (what the cut kept), then rows not delivered yet. Returns those, and the last
        step of the prefix: where the history restarts."""
        n = 0
        while n < len(rows) and _key(rows[n]) in self.delivered:
            n += 1
        return rows[n:], int(_step(rows[n - 1])) if n else -1

    def _poll_local(self) -> tuple[list[dict[str, Any]], int | None]:
        path = metrics_path(self.run_dir)
        try:
            st = path.stat()
        except OSError:
            return [], None
        restarted, rows = None, []
        if (self.inode is not None and st.st_ino != self.inode) or st.st_size < self.offset:
            kept_text = path.read_bytes()
            end = kept_text.rfind(b"\n") + 1
            rows, restarted = self._cut(parse_rows(kept_text[:end].decode(errors="replace")))
            self.offset, self.inode = end, st.st_ino
            return rows, restarted
        self.inode = st.st_ino
        with open(path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        return parse_rows(chunk[:end].decode(errors="replace")), restarted

    def _poll_uri(self) -> tuple[list[dict[str, Any]], int | None]:
        names, _ = _chunks(self.run_dir)
        restarted = None
        base = next((n for n in reversed(names) if n.endswith(".base.jsonl")), None)
        rows: list[dict[str, Any]] = []
        if base is not None and base != self.base:
            rows, restarted = self._cut(
                parse_rows(read_text(join(self.run_dir, METRICS_DIR, base)))
            )
            self.base = base
            self.seen.add(base)
        for n in names:
            if n in self.seen:
                continue
            try:
                rows += parse_rows(read_text(join(self.run_dir, METRICS_DIR, n)))
            except FileNotFoundError:
                continue
            self.seen.add(n)
        return rows, restarted
