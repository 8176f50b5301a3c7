"""Errors a user can act on. Each names what was wrong and, where it can, how to fix it.

Every command exits with one of the codes in EXIT_CODES (one meaning each); every
OrchestratorError subclass names its code as `exit_code = ExitCode.X`. `orch --help` and the
README print the same table (exit_code_table()).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """What `orch` exits with. One number per meaning; see EXIT_CODES for the words."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    CHECKPOINT = 3
    RESOURCES = 4
    DATA = 5
    NOT_FOUND = 6
    CONFLICT = 7
    AUTH = 8
    UNREACHABLE = 9
    STOPPED = 130


EXIT_CODES: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "the run, job, sweep, fire or compression ran and failed",
    ExitCode.BAD_INPUT: "bad input: a spec, option, argument or file (nothing was started)",
    ExitCode.CHECKPOINT: "a checkpoint is missing, incomplete or from another job",
    ExitCode.RESOURCES: "the request can never fit the cluster (resources)",
    ExitCode.DATA: "the data set or an image cannot be read or used",
    ExitCode.NOT_FOUND: "no such run, job, sweep, schedule or queue entry",
    ExitCode.CONFLICT: "a conflict: the id or name is in use, or the run is already running",
    ExitCode.AUTH: "the cluster refused or wants its auth token",
    ExitCode.UNREACHABLE: "cannot reach or use the cluster, its queue or the storage path",
    ExitCode.STOPPED: "stopped by the user (Ctrl-C, SIGTERM, orch stop)",
}


def exit_code_table() -> str:
    """The exit codes as aligned plain text (for `orch --help` and the README)."""
    return "\n".join(f"  {int(code):>3}  {text}" for code, text in EXIT_CODES.items())


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

    exit_code: int = ExitCode.FAILED


class SpecError(OrchestratorError):
    """A job spec (YAML, overrides or workload arguments) is invalid. Holds every error at once."""

    exit_code = ExitCode.BAD_INPUT

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

    exit_code = ExitCode.CHECKPOINT


class InsufficientResourcesError(OrchestratorError):
    """A request that the cluster can never satisfy."""

    exit_code = ExitCode.RESOURCES


class FaultConfigError(OrchestratorError, ValueError):
    """ORCH_FAULTS (orchestrator/worker/faults.py) is not what it should be."""

    exit_code = ExitCode.BAD_INPUT


def exit_for_status(status: str) -> ExitCode:
    """The exit code for a run, job, sweep or fire that ended with `status`: SUCCEEDED 0,
    STOPPED (by the user: Ctrl-C, SIGTERM, orch stop) 130, anything else 1."""
    status = str(status).upper()
    if status == "SUCCEEDED":
        return ExitCode.OK
    if status == "STOPPED":
        return ExitCode.STOPPED
    return ExitCode.FAILED
