"""The report of a compression: `CompressResult` and the ways it is shown.

    print_report(result, console, title)   # rich table, stage notes, exports, quantization API
    markdown_table(rows) + notes_text(rows)  # report.md
    result.to_dict()                         # report.json, and the compress ledger row's extra

One row per stage (measure.StageRow): stage, params, non-zero, size MB, gzip MB, latency at
batch 1 and 64 in ms, metric. `row_line` is the one-line form logged as each stage ends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.compress.measure import StageRow


@dataclass
class CompressResult:
    """The stages' rows, the exports' checks, the output folder and the final model (and the
    float model of the last float stage, which ONNX exports)."""

    rows: list[StageRow]
    exports: list[dict[str, Any]]
    out_dir: str
    model: Any = None
    float_model: Any = None
    quantize_mode: str | None = None
    api: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": [asdict(r) for r in self.rows],
            "exports": self.exports,
            "out_dir": self.out_dir,
            "quantize_mode": self.quantize_mode,
            "quantization_api": self.api,
        }


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f}"


def _metric_text(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items()) if m else "-"


def _ms(v: float | None) -> str:
    return f"{v:.3f}" if v is not None else "-"


TABLE_HEAD = ["stage", "params", "non-zero", "size MB", "gzip MB", "ms b1", "ms b64", "metric"]


def table_rows(rows: list[StageRow]) -> list[list[str]]:
    return [
        [
            r.stage,
            f"{r.params:,}",
            f"{r.nonzero:,}",
            _mb(r.size_bytes),
            _mb(r.gzip_bytes),
            _ms(r.latency_b1_ms),
            _ms(r.latency_b64_ms),
            _metric_text(r.metrics),
        ]
        for r in rows
    ]


def markdown_table(rows: list[StageRow]) -> str:
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    return "\n".join(lines)


def notes_text(rows: list[StageRow]) -> str:
    out = []
    for r in rows:
        for n in r.notes:
            out.append(f"- {r.stage}: {n}")
    return "\n".join(out)


def row_line(r: StageRow) -> str:
    return (
        f"{r.stage:<22} params {r.params:>11,}  non-zero {r.nonzero:>11,}  "
        f"{_mb(r.size_bytes)} MB  b1 {_ms(r.latency_b1_ms)} ms  b64 {_ms(r.latency_b64_ms)} ms"
        f"  {_metric_text(r.metrics)}"
    )


def print_report(result: CompressResult, console=None, title: str = "compression") -> None:
    """The stage table, every stage's notes, each export's check and the quantization API, on
    `console` (default: rich's global console, the command line's stdout)."""
    from rich import get_console
    from rich.table import Table

    console = console or get_console()
    table = Table(title=title)
    for h in TABLE_HEAD:
        table.add_column(h, justify="left" if h in ("stage", "metric") else "right")
    for cells in table_rows(result.rows):
        table.add_row(*cells)
    console.print(table)
    for line in notes_text(result.rows).splitlines():
        console.print(line, highlight=False, markup=False)
    for e in result.exports:
        status = "ok" if e["ok"] else "FAILED"
        console.print(
            f"export {e['format']}: {e['path']}  {_mb(e['size_bytes'])} MB  max |diff| "
            f"{e['max_abs_diff']:.2e} vs {e['checked_against']}  [{status}]",
            highlight=False,
            markup=False,
        )
    console.print(f"quantization API: {result.api}", highlight=False, markup=False)
