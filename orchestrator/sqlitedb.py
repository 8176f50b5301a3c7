"""SQLite as orch's stores use it (the queue's state, the schedules): WAL, a 30 s busy wait,
rows as sqlite3.Row, autocommit outside `transaction`, and `BEGIN IMMEDIATE` transactions so
that read-then-write is atomic across processes (the compare-and-set moves both stores make).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path


def connect(path: str | Path, synchronous_full: bool = False) -> sqlite3.Connection:
    """A connection. synchronous_full: fsync at every commit (the queue: a killed head loses
    no change it acknowledged)."""
    db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=30000")
    if synchronous_full:
        db.execute("PRAGMA synchronous=FULL")
    return db


@contextmanager
def transaction(path: str | Path, synchronous_full: bool = False) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: the write lock first, so read-then-write is atomic."""
    with closing(connect(path, synchronous_full)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def create(path: str | Path, schema: str, added_columns: dict[str, dict[str, str]]) -> None:
    """Create the tables of `schema`, and add to a file an earlier release wrote the columns
    it lacks (`added_columns`: table -> column -> declaration)."""
    with closing(connect(path)) as db:
        db.executescript(schema)
    with transaction(path) as db:
        for table, columns in added_columns.items():
            have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            for col, decl in columns.items():
                if col not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")
