"""Parallel text for seq2seq jobs: files with source/target columns, or a generated corpus.

    from orchestrator.data.text import number_corpus, load_pairs, write_pairs
    splits = number_corpus(max_number=9999, n_val=500, n_test=1000)   # {"train": [...], ...}
    splits["test"][0]      # Pair(source="four thousand, ...", target="quatre mille ...", key=4021)
    write_pairs(splits["train"], "data/train.jsonl")                  # .jsonl | .csv | .parquet
    load_pairs("data/train.jsonl", source_column="en", target_column="fr")

    python -m orchestrator.data.text data/numbers --format parquet    # write train/val/test files

The default corpus is English -> French number words made by num2words ("three hundred and
forty-two" -> "trois cent quarante-deux"). Train, validation and test hold *disjoint* numbers
(one fixed permutation of 0..max_number, cut in three), so the test split measures whether a
model learned the grammar of French numbers, not whether it remembers the pairs.

File errors name the `data.*` field and the file, and raise SpecError (no traceback in `orch`).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import FieldError, SpecError

FORMATS = ("jsonl", "csv", "parquet")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    key: int | None = None  # the number, for the generated corpus


# --- the generated corpus --------------------------------------------------------------------


def number_words(n: int, lang: str) -> str:
    from num2words import num2words

    return num2words(n, lang=lang)


def number_corpus(
    max_number: int = 9999,
    n_val: int = 500,
    n_test: int = 1000,
    n_train: int | None = None,
    seed: int = 0,
    source_lang: str = "en",
    target_lang: str = "fr",
    min_number: int = 0,
) -> dict[str, list[Pair]]:
    """Number words in two languages; train/val/test drawn from disjoint numbers.

    One permutation of min_number..max_number (fixed by `seed`, not by the training seed):
    the first n_test numbers are the test split, the next n_val validation, and the rest (or
    the next n_train) training.
    """
    total = max_number - min_number + 1
    if total <= 0:
        raise SpecError(
            [
                FieldError(
                    "data.max_number", f"expected >= min_number ({min_number})", str(max_number)
                )
            ]
        )
    if n_val + n_test >= total:
        raise SpecError(
            [
                FieldError(
                    "data.n_test",
                    f"n_test + n_val must leave numbers to train on: {n_test} + {n_val} "
                    f">= {total} numbers in {min_number}..{max_number}",
                )
            ]
        )
    numbers = list(range(min_number, max_number + 1))
    random.Random(seed).shuffle(numbers)
    test = numbers[:n_test]
    val = numbers[n_test : n_test + n_val]
    rest = numbers[n_test + n_val :]
    train = rest if n_train is None else rest[:n_train]
    try:
        number_words(1, source_lang), number_words(1, target_lang)
    except NotImplementedError as exc:
        raise SpecError(
            [
                FieldError(
                    "data.source_lang/target_lang", f"num2words does not know this language: {exc}"
                )
            ]
        ) from None

    def pairs(ns: list[int]) -> list[Pair]:
        return [Pair(number_words(n, source_lang), number_words(n, target_lang), n) for n in ns]

    return {"train": pairs(train), "val": pairs(val), "test": pairs(test)}


# --- files -----------------------------------------------------------------------------------


def file_format(path: str | Path, fmt: str = "auto", field: str = "data.path") -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise SpecError(
                [FieldError("data.format", f"expected one of auto, {', '.join(FORMATS)}", fmt)]
            )
        return fmt
    suffixes = [s.lower() for s in Path(path).suffixes]
    for s in reversed(suffixes):
        if s in (".jsonl", ".ndjson", ".json"):
            return "jsonl"
        if s in (".csv", ".tsv"):
            return "csv"
        if s in (".parquet", ".pq"):
            return "parquet"
    raise SpecError(
        [
            FieldError(
                field,
                "cannot tell the format from the file name; expected "
                "a .jsonl, .csv or .parquet file, or set data.format",
                str(path),
            )
        ]
    )


def _read_rows(path: Path, fmt: str, field: str) -> tuple[list[dict], list[str]]:
    """Rows as dicts plus the column names seen."""
    try:
        if fmt == "jsonl":
            rows, cols = [], {}
            with open(path, encoding="utf-8") as fh:
                for i, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise SpecError(
                            [FieldError(field, f"{path} line {i}: not JSON ({exc.msg})")]
                        ) from None
                    if not isinstance(row, dict):
                        raise SpecError(
                            [
                                FieldError(
                                    field,
                                    f"{path} line {i}: expected a JSON object per line",
                                    repr(row)[:60],
                                )
                            ]
                        )
                    rows.append(row)
                    cols.update(dict.fromkeys(row))
            return rows, list(cols)
        if fmt == "csv":
            with open(path, encoding="utf-8", newline="") as fh:
                dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
                reader = csv.DictReader(fh, dialect=dialect)
                rows = list(reader)
                return rows, list(reader.fieldnames or [])
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.to_pylist(), list(table.column_names)
    except SpecError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SpecError([FieldError(field, f"cannot read {path} as {fmt}: {exc}")]) from None


def load_pairs(
    path: str | Path,
    source_column: str = "source",
    target_column: str = "target",
    fmt: str = "auto",
    field: str = "data.path",
) -> list[Pair]:
    """Read (source, target) pairs from a JSONL, CSV or Parquet file.

    Rows with an empty source or target are errors (they usually mean a wrong column).
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(
            [FieldError(field, "file not found; expected a .jsonl, .csv or .parquet file", str(p))]
        )
    fmt = file_format(p, fmt, field)
    rows, cols = _read_rows(p, fmt, field)
    missing = [
        (k, c)
        for k, c in (("data.source_column", source_column), ("data.target_column", target_column))
        if c not in cols
    ]
    if missing:
        raise SpecError(
            [
                FieldError(
                    k,
                    f"no column '{c}' in {p}; its columns are: "
                    f"{', '.join(map(str, cols)) or '(none)'}",
                )
                for k, c in missing
            ]
        )
    out = []
    for i, row in enumerate(rows):
        src, tgt = row.get(source_column), row.get(target_column)
        if src is None or tgt is None or str(src) == "" or str(tgt) == "":
            raise SpecError(
                [
                    FieldError(
                        field, f"{p} row {i + 1}: empty '{source_column}' or '{target_column}'"
                    )
                ]
            )
        out.append(Pair(str(src), str(tgt)))
    if not out:
        raise SpecError([FieldError(field, f"{p} holds no rows")])
    return out


def write_pairs(
    pairs: list[Pair],
    path: str | Path,
    source_column: str = "source",
    target_column: str = "target",
    fmt: str = "auto",
) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fmt = file_format(p, fmt)
    rows = [{source_column: x.source, target_column: x.target} for x in pairs]
    if fmt == "jsonl":
        with open(p, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        with open(p, "w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=[source_column, target_column])
            w.writeheader()
            w.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), p)
    return p


def split_pairs(pairs: list[Pair], n_val: int, n_test: int, seed: int = 0) -> dict[str, list[Pair]]:
    """Split one file's pairs into train/val/test by a fixed shuffle (seeded, not by the run)."""
    if n_val + n_test >= len(pairs):
        raise SpecError(
            [
                FieldError(
                    "data.n_test",
                    f"n_test + n_val ({n_test} + {n_val}) must be "
                    f"fewer than the {len(pairs)} rows of data.path",
                )
            ]
        )
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    pick = [pairs[i] for i in order]
    return {
        "test": pick[:n_test],
        "val": pick[n_test : n_test + n_val],
        "train": pick[n_test + n_val :],
    }


def load_splits(
    path: str | None = None,
    val_path: str | None = None,
    test_path: str | None = None,
    source_column: str = "source",
    target_column: str = "target",
    fmt: str = "auto",
    n_val: int = 500,
    n_test: int = 1000,
    seed: int = 0,
    **corpus_kwargs,
) -> dict[str, list[Pair]]:
    """train/val/test pairs: from files when `path` is set, else the generated number corpus.

    With only `path`, validation and test are cut from it (n_val, n_test rows); with
    `val_path`/`test_path` those files are used as they are.
    """
    if path is None:
        if val_path or test_path:
            raise SpecError(
                [
                    FieldError(
                        "data.path",
                        "data.val_path/test_path need data.path (the training file) as well",
                    )
                ]
            )
        return number_corpus(n_val=n_val, n_test=n_test, seed=seed, **corpus_kwargs)
    kw = dict(source_column=source_column, target_column=target_column, fmt=fmt)
    train = load_pairs(path, field="data.path", **kw)
    val = load_pairs(val_path, field="data.val_path", **kw) if val_path else None
    test = load_pairs(test_path, field="data.test_path", **kw) if test_path else None
    if val is not None and test is not None:
        return {"train": train, "val": val, "test": test}
    cut = split_pairs(
        train, 0 if val is not None else n_val, 0 if test is not None else n_test, seed
    )
    return {
        "train": cut["train"],
        "val": val if val is not None else cut["val"],
        "test": test if test is not None else cut["test"],
    }


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Write the English->French number corpus to files.")
    ap.add_argument("out", help="folder for train/val/test files")
    ap.add_argument("--format", default="jsonl", choices=FORMATS)
    ap.add_argument("--max-number", type=int, default=9999)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--source-column", default="en")
    ap.add_argument("--target-column", default="fr")
    ns = ap.parse_args(argv)
    splits = number_corpus(max_number=ns.max_number, n_val=ns.n_val, n_test=ns.n_test)
    for name in SPLITS:
        p = write_pairs(
            splits[name], Path(ns.out) / f"{name}.{ns.format}", ns.source_column, ns.target_column
        )
        print(f"{p}: {len(splits[name])} pairs")


if __name__ == "__main__":
    main()
