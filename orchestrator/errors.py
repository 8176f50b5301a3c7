"""Errors a user can act on. Each names what was wrong and, where it can, how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem in a spec: where (dotted path), what was expected, what was given."""

    path: str
    message: str
    given: str | None = None

    def __str__(self) -> str:
        text = f"{self.path or '<root>'}: {self.message}"
        if self.given is not None:
            text += f" (given: {self.given})"
        return text


class OrchestratorError(Exception):
    """Base class for errors meant for the user, printed without a traceback by the CLI."""

    exit_code = 1


class SpecError(OrchestratorError):
    """A job spec (YAML, overrides or workload arguments) is invalid. Holds every error at once."""

    exit_code = 2

    def __init__(self, errors: list[FieldError], source: str | None = None):
        self.errors = list(errors)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(self.errors)} error(s){where}:"] + [f"  - {e}" for e in self.errors]
        super().__init__("\n".join(lines))

    @property
    def paths(self) -> list[str]:
        return [e.path for e in self.errors]


class CheckpointError(OrchestratorError):
    """A checkpoint is missing, incomplete, or belongs to a different job."""

    exit_code = 3


class InsufficientResourcesError(OrchestratorError):
    """A request that the cluster can never satisfy."""

    exit_code = 4


class FaultConfigError(OrchestratorError, ValueError):
    """ORCH_FAULTS (orchestrator/worker/faults.py) is not what it should be."""

    exit_code = 2
