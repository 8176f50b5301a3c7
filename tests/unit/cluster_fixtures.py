"""The cluster YAMLs of cluster/ and known-bad copies of them, for the orchestrator.cluster unit
tests (test_cluster_ray_up.py, test_cluster_kuberay.py, test_cli_cluster.py).

    mutated(gpu, ("available_node_types.gpu_a10g.resources.GPU", DEL))   # a builder of a copy
    mutated(kuberay, ("0:spec.rayVersion", "2.9.0"))     # "0:" picks the document of the file
    assert_problem(doc, tmp_path, path, message)         # validate_file reports it at that path
"""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator.cluster.config import validate_file

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
DEL = object()  # as a value in mutated(): delete the key


def gpu():
    return yaml.safe_load((CLUSTER / "gpu.yaml").read_text())


def gcp():
    return yaml.safe_load((CLUSTER / "gcp-gpu.yaml").read_text())


def kuberay():
    return list(yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()))


def _set(d, dotted, value):
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    last = keys[-1]
    if value is DEL:
        del d[last]
    else:
        d[int(last) if isinstance(d, list) else last] = value


def mutated(base, *changes):
    """A builder of a copy of base() with each (dotted path, value) set (DEL: deleted)."""

    def make():
        doc = base()
        for dotted, value in changes:
            target = doc
            if isinstance(doc, list):  # kuberay: "0:spec...." picks the document
                idx, dotted = dotted.split(":", 1)
                target = doc[int(idx)]
            _set(target, dotted, value)
        return doc

    return make


def assert_problem(doc, tmp_path: Path, path: str, message: str) -> None:
    """Written to a file, `doc` fails validate_file with `message` at `path`."""
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump_all(doc) if isinstance(doc, list) else yaml.safe_dump(doc))
    errors = validate_file(f)
    hits = [e for e in errors if e.path == path and message in str(e)]
    assert hits, f"expected {path}: {message}\ngot:\n" + "\n".join(map(str, errors))
