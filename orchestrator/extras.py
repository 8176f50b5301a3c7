"""Optional dependencies: which part of orch needs which extra, and the line that installs it.

    pip install orchestrator                  # the core: Ray Train/Tune/Jobs API, torch, the
                                              #   MNIST and ResNet jobs, your own workloads
    pip install 'orchestrator[rl]'            # RLlib, gymnasium: cartpole_dqn, orch rollout
    pip install 'orchestrator[nlp]'           # transformers, sacreBLEU, num2words: t5_translation
    pip install 'orchestrator[deepspeed]'     # strategy: deepspeed
    pip install 'orchestrator[compress]'      # orch compress: torchao int8, ONNX export + check
    pip install 'orchestrator[tracking]'      # tracking.mlflow and `mlflow ui`
    pip install 'orchestrator[tune-search]'   # sweep.algorithm: optuna | hyperopt
    pip install 'orchestrator[all]'           # all of the above (what `make install` does)

`spec_errors` finds what a spec needs (its workload's `EXTRAS`, strategy, tracking, sweep
algorithm, compress stages) and returns one FieldError per missing extra, with the install line;
orchestrator.spec.validate_spec adds them to the spec's other errors, so `orch validate`,
`plan`, `run` and `sweep` stop with exit 2 before anything starts. A module that is missing
anyway (a workload that imports it at its top, `orch rollout`, `orch translate`) is named with
the same line by `install_hint` (orchestrator/workloads.py, and the command line's last resort).

Nothing here imports those packages: `importlib.util.find_spec` of a top-level name only looks
for it on sys.path, so checking costs milliseconds and works without the extra.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ExitCode, FieldError, OrchestratorError

DIST = "orchestrator"  # the distribution name in pyproject.toml


@dataclass(frozen=True)
class Extra:
    name: str
    modules: tuple[str, ...]  # top-level import names whose absence means "not installed"
    what: str  # what it is for, for messages and docs


# Keep in step with [project.optional-dependencies] in pyproject.toml (tests/unit/test_extras.py
# checks that every extra here is declared there). Only top-level names: find_spec of a dotted
# name would import its parent package (all of Ray for ray.rllib); RLlib is found through the
# packages that ray[rllib] adds (dm-tree is `tree`).
EXTRAS: dict[str, Extra] = {
    e.name: e
    for e in (
        Extra("rl", ("gymnasium", "tree", "lz4", "ormsgpack"), "RLlib and gymnasium"),
        Extra(
            "nlp", ("transformers", "sacrebleu", "num2words"), "transformers, sacreBLEU, num2words"
        ),
        Extra("deepspeed", ("deepspeed",), "DeepSpeed"),
        Extra("compress", ("torchao", "onnx", "onnxscript", "onnxruntime"), "torchao, ONNX"),
        Extra("tracking", ("mlflow",), "MLflow"),
        Extra("tune-search", ("optuna", "hyperopt"), "Optuna, HyperOpt"),
    )
}

# A missing module (as ModuleNotFoundError.name gives it) -> the extra that brings it. Dotted
# names are matched by their longest known prefix.
MODULE_EXTRA: dict[str, str] = {
    **{m: e.name for e in EXTRAS.values() for m in e.modules},
    "ray.rllib": "rl",
    "dm_tree": "rl",
    "tokenizers": "nlp",
    "safetensors": "nlp",
    "huggingface_hub": "nlp",
    "onnx_ir": "compress",
}

# Import name -> pip name, for a missing module that no extra brings.
PIP_NAMES = {
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "yaml": "PyYAML",
    "cv2": "opencv-python",
    "skimage": "scikit-image",
}


class MissingExtra(OrchestratorError):
    """Something asked for needs an extra that is not installed here."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, extra: str, for_what: str, missing: list[str] | None = None):
        self.extra, self.for_what = extra, for_what
        self.missing = list(missing if missing is not None else not_installed(extra))
        super().__init__(message(extra, for_what, self.missing))


def installed(module: str) -> bool:
    """Whether `module` can be imported here, without importing it (top-level names)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
        return False


def not_installed(extra: str, modules: Iterable[str] | None = None) -> list[str]:
    """The modules of `extra` (or only `modules` of it) that are not installed here."""
    return [
        m for m in (modules if modules is not None else EXTRAS[extra].modules) if not installed(m)
    ]


def install_line(*extras: str) -> str:
    return f"pip install '{DIST}[{','.join(extras)}]'"


def message(extra: str, for_what: str, missing: list[str]) -> str:
    names = ", ".join(missing)
    return (
        f"{for_what} needs the [{extra}] extra ({EXTRAS[extra].what}; not installed here: "
        f"no module {names}); install it with: {install_line(extra)}"
    )


def require(extra: str, for_what: str, modules: Iterable[str] | None = None) -> None:
    """Raise MissingExtra (exit 2, with the install line) unless `extra` (or only `modules` of
    it) is installed. For commands that need an extra whatever the spec says."""
    missing = not_installed(extra, modules)
    if missing:
        raise MissingExtra(extra, for_what, missing)


def extra_for_module(module: str | None) -> str | None:
    """The extra that brings `module` (a ModuleNotFoundError's name), or None."""
    parts = (module or "").split(".")
    for i in range(len(parts), 0, -1):
        found = MODULE_EXTRA.get(".".join(parts[:i]))
        if found:
            return found
    return None


def install_hint(module: str | None) -> str:
    """How to get `module`: the extra's install line, else pip install of its package."""
    extra = extra_for_module(module)
    if extra:
        return install_line(extra)
    top = (module or "").split(".")[0]
    return f"pip install {PIP_NAMES.get(top, top)} (the package that provides {top!r})"


def missing_module_message(module: str | None, for_what: str) -> str:
    """One line for a ModuleNotFoundError: which extra (or package) to install."""
    extra = extra_for_module(module)
    if extra:
        return message(extra, for_what, [module or "?"])
    return f"{for_what} imports {module!r}, which is not installed here: {install_hint(module)}"


# ---------------------------------------------------------------------------------------------
# What a spec needs


@dataclass(frozen=True)
class Need:
    path: str  # the spec field that asks for it
    extra: str
    modules: tuple[str, ...]  # the modules of the extra that this use needs
    for_what: str  # what needs it, as the message names it: "cartpole_dqn needs ..."


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def spec_needs(data: dict[str, Any], workload_module: Any = None) -> list[Need]:
    """The extras a spec dict needs, each with the field that asks for it. `workload_module`:
    the imported workload, whose `EXTRAS` (a tuple of extra names) declares its own."""
    needs: list[Need] = []
    workload = data.get("workload")
    for extra in getattr(workload_module, "EXTRAS", ()) or ():
        if extra in EXTRAS:
            needs.append(Need("workload", extra, EXTRAS[extra].modules, str(workload)))
    if data.get("strategy") == "deepspeed":
        needs.append(Need("strategy", "deepspeed", ("deepspeed",), "deepspeed"))
    if _section(data, "tracking").get("mlflow"):
        needs.append(Need("tracking.mlflow", "tracking", ("mlflow",), "MLflow tracking"))
    algorithm = _section(data, "sweep").get("algorithm")
    if algorithm in ("optuna", "hyperopt"):
        needs.append(Need("sweep.algorithm", "tune-search", (algorithm,), str(algorithm)))
    compress = _section(data, "compress")
    if compress.get("quantize"):
        needs.append(Need("compress.quantize", "compress", ("torchao",), "int8 quantization"))
    export = compress.get("export")
    if isinstance(export, list) and "onnx" in export:
        needs.append(
            Need(
                "compress.export",
                "compress",
                ("onnx", "onnxscript", "onnxruntime"),
                "ONNX export",
            )
        )
    return needs


def _errors(needs: list[Need]) -> list[FieldError]:
    errors: list[FieldError] = []
    for need in needs:
        missing = not_installed(need.extra, need.modules)
        if missing:
            errors.append(FieldError(need.path, message(need.extra, need.for_what, missing)))
    return errors


def workload_errors(workload: str, workload_module: Any) -> list[FieldError]:
    """The extras that the workload module declares (`EXTRAS`) and this environment lacks.
    Checked before its `train:` model, whose validators may need them (cartpole_dqn's env)."""
    errors = [
        FieldError("workload", f"declares EXTRAS {e!r}, which is not one of {', '.join(EXTRAS)}")
        for e in getattr(workload_module, "EXTRAS", ()) or ()
        if e not in EXTRAS
    ]
    return errors + _errors(
        [n for n in spec_needs({"workload": workload}, workload_module) if n.path == "workload"]
    )


def spec_errors(data: dict[str, Any], workload_module: Any = None) -> list[FieldError]:
    """One FieldError per extra that the spec needs and this environment lacks (the
    workload's own EXTRAS too, given its module)."""
    if not isinstance(data, dict):
        return []
    workload = str(data.get("workload"))
    fields = [n for n in spec_needs(data) if n.path != "workload"]
    own = workload_errors(workload, workload_module) if workload_module is not None else []
    return own + _errors(fields)
