"""`orch translate`: text through a trained t5_translation checkpoint."""

from __future__ import annotations

import typer
from rich.table import Table

from orchestrator.cli.console import console, fail
from orchestrator.errors import OrchestratorError
from orchestrator.translate import load_translator, read_texts


def register(app) -> None:

    @app.command("translate")
    def translate_cmd(
        checkpoint: str = typer.Argument(
            ..., help="checkpoint_NNNNNN directory, or a run directory."
        ),
        texts: list[str] | None = typer.Argument(None, help="Texts to translate."),
        file: str | None = typer.Option(
            None, "--file", "-f", help="More texts, one per line ('-': stdin)."
        ),
        beams: int | None = typer.Option(
            None,
            "--beams",
            min=1,
            max=64,
            help="Beam width (1 = greedy); default: the run's train.num_beams.",
        ),
        batch_size: int = typer.Option(
            32, "--batch-size", min=1, help="Texts per generate() call."
        ),
        max_new_tokens: int | None = typer.Option(
            None, "--max-new-tokens", min=1, help="Longest output in tokens; default: the run's."
        ),
        no_prefix: bool = typer.Option(
            False, "--no-prefix", help="Do not add the training task prefix."
        ),
        table: bool = typer.Option(
            False, "--table", help="Print a table of source and translation."
        ),
    ) -> None:
        """Translate text with a trained t5_translation checkpoint (one output line per input)."""

        try:
            inputs = read_texts(texts, file)
            tr = load_translator(checkpoint)
            outputs = tr.translate(
                inputs,
                beams=beams,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                add_prefix=not no_prefix,
            )
        except OrchestratorError as exc:
            fail(exc)
        if table:
            t = Table(title=f"{tr.checkpoint} (beams {beams or tr.num_beams})")
            t.add_column("source")
            t.add_column("translation")
            for s, o in zip(inputs, outputs, strict=True):
                t.add_row(s, o)
            console.print(t)
        else:
            for o in outputs:
                print(o)
