"""Listings in three formats (`--format table|json|csv`) and tables that stay one line a row.

Every listing (`orch runs`, `orch list`, `orch schedule list`, `orch queue`, `orch queue
queues`, `orch cluster pools`, `orch compare`) builds its records (dicts with stable keys) and a
rich Table, and hands both to `emit`:

    table  the rich Table; on a terminal as wide as the terminal, in a pipe or a log one line
           per row, never folded or cut to 80 columns (print_table)
    json   a list of objects, one per record, with the command's stable keys
    csv    a header of those keys, then one line per record; nested values as JSON
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

import typer
from rich.measure import Measurement
from rich.table import Table

from orchestrator.cli.console import console


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def format_option() -> Any:
    return typer.Option(
        Format.table,
        "--format",
        case_sensitive=False,
        help="table (for people), json (a list of objects) or csv (a header, then a row each).",
    )


def json_alias_option() -> Any:
    """The older `--json` flag of some listings: the same as --format json."""
    return typer.Option(False, "--json", hidden=True, help="Same as --format json.")


def resolve(fmt: Format | str, as_json: bool = False) -> Format:
    return Format.json if as_json else Format(fmt)


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO 8601, enums by value, the rest as they are."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_json(records: Sequence[dict[str, Any]]) -> str:
    return json.dumps([_plain(r) for r in records], indent=2, default=str)


def to_csv(records: Sequence[dict[str, Any]], keys: Sequence[str] | None = None) -> str:
    """A header (keys, or every key in order of first appearance), then one line a record.
    Lists and objects are written as JSON, None as an empty field."""
    if keys is None:
        seen: dict[str, None] = {}
        for r in records:
            seen.update(dict.fromkeys(r))
        keys = list(seen)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for r in records:
        row = []
        for k in keys:
            v = _plain(r.get(k))
            if v is None:
                row.append("")
            elif isinstance(v, (dict, list)):
                row.append(json.dumps(v, sort_keys=True))
            else:
                row.append(v)
        w.writerow(row)
    return buf.getvalue()


def print_table(table: Table) -> None:
    """On a terminal, as wide as the terminal (rich folds what does not fit). In a pipe or a
    log, every row on one line: the console is widened to the table's natural width for this
    print, and each cell is kept from wrapping, so nothing is folded or cut to 80 columns."""
    if console.is_terminal:
        console.print(table)
        return
    for col in table.columns:
        col.no_wrap = True
        col.overflow = "ignore"
    width = console.width
    natural = Measurement.get(console, console.options.update(max_width=1_000_000), table)
    console.width = max(width, natural.maximum)
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


def emit(
    fmt: Format | str,
    records: Sequence[dict[str, Any]],
    table: Callable[[], Table] | None,
    *,
    keys: Sequence[str] | None = None,
    empty: str | None = None,
) -> None:
    """Print records as fmt. table() builds the rich Table (only for --format table); empty is
    what the table format prints when there are no records (json prints [], csv the header)."""
    fmt = Format(fmt)
    if fmt is Format.json:
        records = [{k: r.get(k) for k in keys} for r in records] if keys else records
        sys.stdout.write(to_json(records) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(to_csv(records, keys))
    elif not records and empty is not None:
        console.print(empty, highlight=False, soft_wrap=True)
    elif table is not None:
        print_table(table())
