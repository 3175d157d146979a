"""The access journal: every call, reads and refusals included, in a hash chain.

NF Z42-020 asks a digital safe to keep a tamper-evident trace of every operation. Each
record is a small JSON object (who, role, establishment, what, target, outcome, HTTP status,
when), stored as its RFC 8785 bytes; record *n*'s link is
``SHA-256(link(n−1) ‖ SHA-256(record n))`` from a zero genesis. Changing, inserting or
deleting a record changes every link after it; ``vault verify`` recomputes them all, and
the latest link goes into every checkpoint's extension line, so that the chain's head is
itself signed and time-stamped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Final, Protocol

from daemon.errors import VaultError
from daemon.leaf import canonical

GENESIS: Final = bytes(32)


class JournalBroken(VaultError):
    """The chain does not hold at ``seq``."""

    def __init__(self, seq: int, why: str) -> None:
        super().__init__(f"access journal record {seq}: {why}")
        self.seq = seq


@dataclass(frozen=True, slots=True)
class JournalRecord:
    at: str  # RFC 3339 UTC
    actor: str  # the bearer token's label, or "anonymous"
    role: str  # establishment, auditor, admin, public
    establishment: str | None
    action: str  # e.g. "POST /v1/entries", "vault keys create"
    target: str | None  # e.g. "entries/42", "entries?session=S-1042"
    outcome: str  # ok, refused, error
    status: int  # the HTTP status answered (0 for a command)

    def encode(self) -> bytes:
        return canonical(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> JournalRecord:
        return cls(**json.loads(data))


class JournalWriter(Protocol):
    """What :func:`append` needs of the store's writer."""

    def journal_head(self) -> tuple[int, bytes | None]: ...

    def add_journal(self, seq: int, record: bytes, link: bytes) -> None: ...


def append(w: JournalWriter, record: JournalRecord) -> None:
    """Chain ``record`` after the journal's head *as the database holds it* (inside the
    writer's transaction): the daemon and the commands journal from different processes."""
    data = record.encode()
    seq, head = w.journal_head()
    w.add_journal(seq, data, link(head or GENESIS, data))


def link(previous: bytes, record: bytes) -> bytes:
    return hashlib.sha256(previous + hashlib.sha256(record).digest()).digest()


def check_chain(rows: Iterable[tuple[int, bytes, bytes]], *, start_seq: int = 0) -> bytes:
    """Walk ``(seq, record bytes, stored link)`` rows in order from ``start_seq``; the head
    link, or :class:`JournalBroken` at the first row that does not hold (a gap in ``seq``,
    a record that is not canonical, a link that does not follow)."""
    previous = GENESIS
    expected = start_seq
    for seq, record, stored in rows:
        if seq != expected:
            raise JournalBroken(expected, f"missing (the next record found is {seq})")
        try:
            if JournalRecord.decode(record).encode() != record:
                raise JournalBroken(seq, "the record is not in canonical form")
        except (TypeError, ValueError) as e:
            raise JournalBroken(seq, f"the record is not a journal record: {e}") from e
        previous = link(previous, record)
        if previous != stored:
            raise JournalBroken(seq, "its link does not follow from the records before it")
        expected += 1
    return previous
