"""What the `ray up` rules (ray_up.py) and the KubeRay rules (kuberay.py) share: the Ray version
this project runs, the rule for Ray images, and how a given value is quoted in a message.

    ray_version()                                  # e.g. "2.60.0", from the installed Ray
    image_errors("docker.image", "rayproject/ray:2.9.0-gpu")   # -> [FieldError(...)]
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from orchestrator.errors import FieldError


@functools.lru_cache(maxsize=1)
def ray_version() -> str:
    try:
        from importlib.metadata import version

        return version("ray")
    except Exception:  # noqa: BLE001 - metadata missing in odd installs
        import ray

        return ray.__version__


def image_errors(path: str, image: Any) -> list[FieldError]:
    """A rayproject/ray (or ray-ml) image must be tagged with this project's Ray version."""
    image = str(image)
    m = re.match(r"^(?:docker\.io/)?rayproject/ray(?:-ml)?(?::(?P<tag>.+))?$", image)
    if not m:
        return []  # your own image: its Ray version is yours to keep in step
    tag = m.group("tag") or "latest"
    version = ray_version()
    if not tag.startswith(version):
        return [
            FieldError(
                path,
                f"Ray image tag must start with this project's Ray version "
                f"{version} (e.g. rayproject/ray:{version}-py311-gpu)",
                image,
            )
        ]
    return []


def short(text: str, limit: int = 300) -> str:
    """One line, at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show(value: Any) -> str:
    """A value as a message quotes it (given: ...): JSON, one short line."""
    return short(json.dumps(value, default=str), 120)
