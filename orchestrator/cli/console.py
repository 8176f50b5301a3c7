"""The command line's one stdout console, its stderr console, and `fail`.

Domain code never imports this module: what it prints goes to the console its caller hands
it, or to rich's global console (`rich.get_console()`), which is this same `console`.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich import get_console
from rich.console import Console
from rich.markup import escape

from orchestrator.errors import OrchestratorError, SpecError

console: Console = get_console()
err_console = Console(stderr=True)


def fail(exc: OrchestratorError) -> NoReturn:
    """Print a user error without a traceback and exit with its exit code. A SpecError's list
    is printed as it is (its paths hold brackets that rich would read as markup)."""
    if isinstance(exc, SpecError):
        err_console.print(str(exc), highlight=False, markup=False, soft_wrap=True)
    else:
        # escape: a message's own brackets (pip install 'orchestrator[rl]', x[0]) are not markup
        err_console.print(
            f"[bold red]error[/bold red]: {escape(str(exc))}", highlight=False, soft_wrap=True
        )
    raise typer.Exit(getattr(exc, "exit_code", 1))
