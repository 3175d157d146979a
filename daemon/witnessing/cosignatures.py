"""The ``cosignatures`` table (schema v5): each witness's cosignature of each checkpoint.

Functions of the store's :class:`~daemon.store.Reader` (any connection: a reader's, the
committer's writer, ``vault verify``'s read-only one) and :class:`~daemon.store.Writer`
(inside a committer job). Rows are only ever inserted: a witness that cosigns the same
checkpoint again (a fresh timestamp) adds nothing, the first line is kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemon.store import CheckpointRow, Reader, Writer, wrap
from daemon.witnessing.policy import Cosigned, Policy, cosigned_note


@dataclass(frozen=True, slots=True)
class CosignatureRow:
    size: int  # the checkpoint's tree size (checkpoints.size)
    witness: str  # the witness's key name
    key_id: bytes  # its 4-byte key ID (c2sp.org/tlog-cosignature)
    line: str  # the cosignature/v1 line as the witness answered it, without its newline
    cosigned_at: int  # the timestamp it carries, POSIX seconds
    received_at: str  # RFC 3339 UTC, when the vault stored it


def _all(reader: Reader, sql: str, *args: Any) -> list[Any]:
    try:
        return reader.conn.execute(sql, args).fetchall()
    except sqlite3.Error as e:
        raise wrap(e) from e


def _row(r: Sequence[Any]) -> CosignatureRow:
    return CosignatureRow(int(r[0]), str(r[1]), bytes(r[2]), str(r[3]), int(r[4]), str(r[5]))


def add(writer: Writer, row: CosignatureRow) -> bool:
    """Store ``row`` unless this witness key's line for that size is already there."""
    found = _all(
        writer,
        "SELECT 1 FROM cosignatures WHERE size = ? AND witness = ? AND key_id = ?",
        row.size,
        row.witness,
        row.key_id,
    )
    if found:
        return False
    try:
        writer.conn.execute(
            "INSERT INTO cosignatures VALUES (?, ?, ?, ?, ?, ?)",
            (row.size, row.witness, row.key_id, row.line, row.cosigned_at, row.received_at),
        )
    except sqlite3.Error as e:
        raise wrap(e) from e
    return True


def of_checkpoint(reader: Reader, size: int) -> list[CosignatureRow]:
    """The cosignatures stored for the checkpoint of ``size``, by witness name."""
    rows = _all(reader, "SELECT * FROM cosignatures WHERE size = ? ORDER BY witness", size)
    return [_row(r) for r in rows]


def every(reader: Reader) -> list[CosignatureRow]:
    """Every stored cosignature, by checkpoint size then witness (for ``vault verify``)."""
    return [_row(r) for r in _all(reader, "SELECT * FROM cosignatures ORDER BY size, witness")]


def latest_per_witness(reader: Reader) -> dict[str, CosignatureRow]:
    """Each witness's cosignature of the largest checkpoint it cosigned (by key name)."""
    rows = _all(
        reader,
        "SELECT c.* FROM cosignatures c JOIN (SELECT witness, MAX(size) AS m FROM cosignatures "
        "GROUP BY witness) l ON c.witness = l.witness AND c.size = l.m",
    )
    return {row.witness: row for row in map(_row, rows)}


def sizes_cosigned(
    reader: Reader, witnesses: Sequence[str], at_least: int, by_at_least: int
) -> list[int]:
    """Checkpoint sizes from ``at_least`` on with stored lines of at least ``by_at_least`` of
    the named ``witnesses``, largest first (at most 16: the search is bounded)."""
    if not witnesses:
        return []
    marks = ", ".join("?" * len(witnesses))
    rows = _all(
        reader,
        f"SELECT size FROM cosignatures WHERE size >= ? AND witness IN ({marks}) "
        "GROUP BY size HAVING COUNT(DISTINCT witness) >= ? ORDER BY size DESC LIMIT 16",
        at_least,
        *witnesses,
        by_at_least,
    )
    return [int(r[0]) for r in rows]


def checkpoint_of_size(reader: Reader, size: int) -> CheckpointRow | None:
    """The checkpoint of exactly ``size`` entries, if the vault signed one."""
    rows = _all(reader, "SELECT * FROM checkpoints WHERE size = ?", size)
    return CheckpointRow(*rows[0]) if rows else None


def checkpoint_text(note: str) -> str:
    """A signed note's text (what a cosignature signs): everything up to the last blank
    line (c2sp.org/signed-note)."""
    return note[: note.rfind("\n\n") + 1]


def cosigned(reader: Reader, policy: Policy, checkpoint: CheckpointRow) -> tuple[str, Cosigned]:
    """The checkpoint's note with the stored cosignatures of ``policy``'s witnesses that
    verify, and what they amount to (lines that do not verify are in ``Cosigned.bad``)."""
    if not policy.verifiers:
        return checkpoint.note, policy.check(checkpoint_text(checkpoint.note), [])
    lines = [row.line for row in of_checkpoint(reader, checkpoint.size)]
    result = policy.check(checkpoint_text(checkpoint.note), lines)
    return cosigned_note(checkpoint.note, result.lines), result


def best_covering(reader: Reader, policy: Policy, size: int) -> CheckpointRow | None:
    """The checkpoint to prove entries below ``size`` against: the latest if it meets the
    policy, else the largest that does, else the one cosigned by the most witnesses (the
    latest at equal count) — always one of at least ``size`` entries; None if none covers
    them yet."""
    latest = reader.latest_checkpoint()
    if latest is None or latest.size < size:
        return None
    found = cosigned(reader, policy, latest)[1]
    if found.meets_policy or not policy.verifiers:
        return latest
    names = [v.name for v in policy.verifiers]
    best, most = latest, len(found.cosignatures)
    for at_least in (policy.quorum, 1):
        for candidate in sizes_cosigned(reader, names, size, at_least):
            row = checkpoint_of_size(reader, candidate)
            if row is None:
                continue
            result = cosigned(reader, policy, row)[1]
            if result.meets_policy:
                return row
            if len(result.cosignatures) > most:
                best, most = row, len(result.cosignatures)
    return best
