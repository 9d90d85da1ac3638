"""The history writer: a small child process that owns the SQLite file (CONTRACT §11).

The runner never touches the database while it runs: a commit may wait on the disk
(fsync) for as long as the disk likes, and the loop must never block (DESIGN §2). So the
runner sends one JSON line per finished run or enable/disable on this child's stdin (a
pipe written without blocking, `store/state.py`), and this child, spawned and reaped like
any other, writes them. It ends when the pipe closes, after its last commit.

Run as `python -I -c ...` (see state.py): standard library only.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys

KEEP_PER_SERVICE = 1000     # runs kept in the file per service; older ones are pruned

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, service TEXT NOT NULL, trigger TEXT, start REAL, ready REAL,
    end REAL, duration REAL, exit_code INTEGER, signal INTEGER, outcome TEXT, why TEXT,
    status TEXT, progress TEXT, planned REAL);
CREATE INDEX IF NOT EXISTS runs_service ON runs (service, id);
CREATE TABLE IF NOT EXISTS enabled (service TEXT PRIMARY KEY, enabled INTEGER NOT NULL);
"""
COLUMNS = ("service", "trigger", "start", "ready", "end", "duration", "exit_code", "signal",
           "outcome", "why", "status", "progress", "planned")


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


def apply(db: sqlite3.Connection, record: dict) -> None:
    if record.get("t") == "enabled":
        db.execute("INSERT OR REPLACE INTO enabled (service, enabled) VALUES (?, ?)",
                   (record["service"], int(bool(record["enabled"]))))
        return
    run = record["run"]
    values = [run.get(c) for c in COLUMNS]
    values[COLUMNS.index("progress")] = (json.dumps(run["progress"]) if run.get("progress")
                                         is not None else None)
    db.execute(f"INSERT INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
               values)
    db.execute("DELETE FROM runs WHERE service = ? AND id <= (SELECT id FROM runs WHERE "
               "service = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
               (run["service"], run["service"], KEEP_PER_SERVICE))


def main(path: str) -> int:
    try:
        db = connect(path)
    except sqlite3.Error as exc:
        print(f"state_dir: cannot write the history to {path}: {exc}; it is kept in memory "
              f"only", file=sys.stderr)
        return 1
    rest = b""
    while True:
        try:
            chunk = os.read(0, 1 << 16)
        except InterruptedError:
            continue
        if not chunk:
            break
        *lines, rest = (rest + chunk).split(b"\n")
        try:
            db.execute("BEGIN")         # what one read brought is one transaction
            for line in lines:
                try:
                    apply(db, json.loads(line))
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    print(f"state_dir: a record was not understood and is skipped: {exc!r}",
                          file=sys.stderr)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            print(f"state_dir: cannot write the history to {path}: {exc}; it is kept in "
                  f"memory only", file=sys.stderr)
            return 1
    db.close()
    return 0
