"""Finding a spec's `workload:`: a built-in job, a module of your project, a file, or a script.

    workload: mnist_mlp              # built in: jobs/mnist_mlp.py
    workload: mypkg.mytrain          # a module importable from the spec's folder or the
                                     #   current folder (what `--working-dir .` ships), or installed
    workload: train/my_job.py        # a file, relative to the spec's folder or the current folder
    workload: script                 # an existing torchrun-style script, run unchanged
                                     #   (orchestrator/worker/script.py; train: {script: ...})

`resolve()` imports the module and remembers where it came from; the driver's `sys.path` gets
the folder, and the workers get it through `WorkerConfig.workload_path`
(orchestrator/worker/entry.py imports the workload there before calling its train_loop). A
path under the driver's working dir on a cluster is kept relative to it: every node unpacks
the same `--working-dir`, so the same relative path names the same file there.

An error names every place that was tried. A workload that imports a module which is not
installed is named with the line that installs it (`pip install 'orchestrator[rl]'` for a module
of an extra, orchestrator/extras.py), never an ImportError traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

BUILTIN_PACKAGE = "jobs"
SCRIPT = "script"  # the built-in script workload
_SCRIPT_MODULE = "orchestrator.worker.script"


class WorkloadNotFound(Exception):
    """The workload could not be imported; `tried` lists every place looked at."""

    def __init__(self, name: str, tried: list[str] | None = None, reason: str = ""):
        self.name, self.tried, self.reason = name, list(tried or []), reason
        super().__init__(name, self.tried, reason)  # all in args: it pickles (Ray ships it)

    def __str__(self) -> str:
        return self.reason or f"no workload {self.name!r}; tried {'; '.join(self.tried)}"


@dataclass(frozen=True)
class Resolved:
    module_name: str
    path: str | None  # the sys.path entry it was found under (None: built in or installed)
    origin: str  # where it came from, for messages


_RESOLVED: dict[str, Resolved] = {}


def builtin() -> list[str]:
    """The workloads in jobs/ (and `script`)."""
    jobs_dir = Path(importlib.import_module(BUILTIN_PACKAGE).__file__).parent
    return sorted([p.stem for p in jobs_dir.glob("*.py") if not p.stem.startswith("_")] + [SCRIPT])


def _is_file(name: str) -> bool:
    return name.endswith(".py") or "/" in name or os.sep in name


def _dirs(search: list[str | os.PathLike | None] | None) -> list[Path]:
    out: list[Path] = []
    for d in [*(search or []), os.getcwd()]:
        if d is None:
            continue
        p = Path(d).expanduser().resolve()
        if p not in out:
            out.append(p)
    return out


def _import_from(module_name: str, entry: Path) -> object:
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))
    importlib.invalidate_caches()
    return importlib.import_module(module_name)


def _missing_dependency(name: str, exc: ModuleNotFoundError, tried: list[str]) -> WorkloadNotFound:
    """The workload was found but imports a module that is not installed here."""
    from orchestrator import extras

    if not exc.name:
        return WorkloadNotFound(name, tried, f"workload {name!r}: {exc}")
    return WorkloadNotFound(
        name, tried, extras.missing_module_message(exc.name, f"workload {name!r}")
    )


def resolve(name: str, search: list[str | os.PathLike | None] | None = None) -> Resolved:
    """Import workload `name`, looking in `search` (the spec's folder) and the current folder.
    Raises WorkloadNotFound naming every place tried."""
    if name in _RESOLVED:
        return _RESOLVED[name]
    tried: list[str] = []
    dirs = _dirs(search)
    found: Resolved | None = None
    if name == SCRIPT:
        found = Resolved(_SCRIPT_MODULE, None, "built in (orchestrator/worker/script.py)")
        importlib.import_module(_SCRIPT_MODULE)
    elif _is_file(name):
        for d in dirs:
            f = (d / name).resolve()
            tried.append(str(f))
            if f.is_file() and f.suffix == ".py":
                try:
                    mod = _import_from(f.stem, f.parent)
                except ModuleNotFoundError as exc:
                    if exc.name == f.stem:
                        raise
                    raise _missing_dependency(name, exc, tried) from None
                if Path(getattr(mod, "__file__", "") or "").resolve() != f:
                    raise WorkloadNotFound(
                        name,
                        tried,
                        f"{f}: a module named {f.stem!r} is "
                        f"already imported from {mod.__file__}; rename the file",
                    )
                found = Resolved(f.stem, str(f.parent), str(f))
                break
    else:
        if "." not in name:
            tried.append(f"{BUILTIN_PACKAGE}.{name} (the built-in workloads)")
            try:
                importlib.import_module(f"{BUILTIN_PACKAGE}.{name}")
                found = Resolved(f"{BUILTIN_PACKAGE}.{name}", None, "built in")
            except ModuleNotFoundError as exc:
                if exc.name not in (f"{BUILTIN_PACKAGE}.{name}", BUILTIN_PACKAGE):
                    raise _missing_dependency(name, exc, tried) from None
        rel = Path(*name.split("."))
        for d in dirs if found is None else []:
            for cand in (d / rel.with_suffix(".py"), d / rel / "__init__.py"):
                tried.append(str(cand))
                if cand.is_file():
                    try:
                        _import_from(name, d)
                    except ModuleNotFoundError as exc:
                        if exc.name is not None and name.startswith(exc.name):
                            raise
                        raise _missing_dependency(name, exc, tried) from None
                    found = Resolved(name, str(d), str(cand))
                    break
            if found:
                break
        if found is None:
            tried.append(f"an installed module {name!r}")
            try:
                importlib.import_module(name)
                found = Resolved(name, None, "installed")
            except ModuleNotFoundError as exc:
                if exc.name is None or not name.startswith(exc.name):
                    raise _missing_dependency(name, exc, tried) from None
    if found is None:
        raise WorkloadNotFound(name, tried)
    _RESOLVED[name] = found
    return found


def import_workload(name: str, path: str | None = None):
    """The workload module `name` (resolved once; `path`: a sys.path entry to look in first,
    as the workers get it)."""
    r = _RESOLVED.get(name)
    if r is None and path:  # a worker: the driver found it; its folder is `path`
        entry = on_worker(path)
        module_name = Path(name).stem if _is_file(name) else name
        try:
            _import_from(module_name, entry)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            raise WorkloadNotFound(
                name,
                [str(entry)],
                f"workload {name!r}: no module "
                f"{module_name!r} in {entry} (working dir "
                f"{_working_dir_root() or Path.cwd()})",
            ) from None
        r = _RESOLVED[name] = Resolved(module_name, str(entry), f"{entry} ({module_name})")
    if r is None:
        r = resolve(name)
    if r.path and r.path not in sys.path:
        sys.path.insert(0, r.path)
    return importlib.import_module(r.module_name)


def location(name: str) -> str | None:
    """Where the workers find workload `name` (WorkerConfig.workload_path), or None."""
    r = _RESOLVED.get(name)
    return worker_path(r.path) if r and r.path else None


def worker_path(path: str) -> str:
    """A path as the workers should see it: relative to the working dir when the driver runs
    in a Ray job's --working-dir and the path is inside it (each node unpacks the same
    package), absolute otherwise."""
    p = Path(path).resolve()
    root = _working_dir_root()
    if root is not None and (p == root.resolve() or root.resolve() in p.parents):
        return str(p.relative_to(root.resolve())) or "."
    return str(p)


_WORKING_DIR_MARK = "/runtime_resources/working_dir_files/"


def _working_dir_root() -> Path | None:
    """This node's unpacked --working-dir, when this process belongs to a Ray job with one (Ray
    puts it on PYTHONPATH; Ray Train moves its workers' cwd elsewhere, to its artifacts dir)."""
    for entry in [*os.environ.get("PYTHONPATH", "").split(os.pathsep), *sys.path, os.getcwd()]:
        entry = entry.replace(os.sep, "/")
        if _WORKING_DIR_MARK in entry:
            head, rest = entry.split(_WORKING_DIR_MARK, 1)
            return Path(head + _WORKING_DIR_MARK + rest.split("/", 1)[0])
    return None


def on_worker(path: str) -> Path:
    """A path from worker_path() as this worker sees it: relative ones against this node's
    unpacked --working-dir (else the current folder)."""
    p = Path(path)
    return p if p.is_absolute() else ((_working_dir_root() or Path.cwd()) / p).resolve()
