"""The one place that sequences appends: indices, tree nodes, session states, the journal.

Its state in memory — the tree's size and right edge, each session's latest state, the
journal's head — is advanced only by jobs the committer runs one after the other on its
thread, so there is no lock: the committer *is* the critical section (Sunlight's one
compare-and-swap, here one writer). Everything a job writes is an INSERT. When a group's
COMMIT fails, :meth:`Sequencer.load` rebuilds the state from the database.

A job checks before it writes and changes the memory only after every write of the job
succeeded, so a refused request (a rule, a reused idempotency key) leaves no trace but its
journal record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from daemon import merkle
from daemon.clock import parse_time, utc_text
from daemon.errors import Refused
from daemon.journal import JournalRecord, append
from daemon.leaf import Leaf
from daemon.records import Entry, Kind
from daemon.rules import SessionState, check, next_state
from daemon.store import (
    CheckpointRow,
    EntryRow,
    IdempotencyRow,
    Reader,
    SealRow,
    SessionRow,
    Writer,
)


@dataclass(frozen=True, slots=True)
class Prepared:
    """One entry ready to be sequenced: parsed, its leaf built, perhaps already sealed."""

    entry: Entry
    leaf: Leaf
    lookup: bytes | None  # the student's keyed lookup, when there is a student
    seal: SealRow | None  # idx is filled in at sequencing (-1 until then)


@dataclass(frozen=True, slots=True)
class Receipt:
    index: int
    leaf_hash: bytes
    sealed: bool
    gen_time: str | None
    token: bytes | None

    def to_json(self) -> dict[str, Any]:
        import base64

        return {
            "index": self.index,
            "leaf_hash": self.leaf_hash.hex(),
            "sealed": self.sealed,
            "gen_time": self.gen_time,
            "token": None if self.token is None else base64.b64encode(self.token).decode(),
        }


@dataclass(frozen=True, slots=True)
class Deposit:
    """One POST /v1/entries: its entries, its idempotency key, its journal record."""

    prepared: tuple[Prepared, ...]
    scope: str  # whose keys: the caller's establishment (or token label)
    key: str
    body_hash: bytes
    batch: bool
    received_at: str
    journal: JournalRecord  # outcome and status filled in by the job


@dataclass(frozen=True, slots=True)
class Deposited:
    receipts: tuple[Receipt, ...]
    batch: bool
    replayed: bool  # the same key and body came before: nothing new was written


def body_hash(value: object) -> bytes:
    """What "the same body" means for an idempotency key: the same JSON, canonically."""
    from daemon.leaf import canonical

    return hashlib.sha256(canonical(value)).digest()


def _frontier(size: int) -> set[tuple[int, int]]:
    """The complete subtrees on the tree's right edge: all a future append needs."""
    return {(lvl, (size >> lvl) - 1) for lvl in range(size.bit_length()) if size >> lvl & 1}


class Sequencer:
    """The log's state in memory and the jobs that advance it (run by the committer)."""

    def __init__(self) -> None:
        self.size = 0
        self.sessions: dict[tuple[str, str], SessionState] = {}
        self.edge: dict[tuple[int, int], bytes] = {}

    def load(self, reader: Reader) -> None:
        self.size = reader.size()
        self.sessions = {
            (r.establishment, r.session_id): SessionState(
                version=r.version,
                start=parse_time(r.start_at),
                end=parse_time(r.end_at),
                cancelled=r.cancelled,
            )
            for r in reader.sessions_latest()
        }
        edge = {}
        for lvl, idx in _frontier(self.size):
            h = reader.node(lvl, idx)
            if h is None:
                raise RuntimeError(f"tree node ({lvl}, {idx}) missing: run vault verify")
            edge[lvl, idx] = h
        self.edge = edge

    # -- jobs ---------------------------------------------------------------------------

    def deposit(
        self, d: Deposit, *, window_of: Callable[[str], Any]
    ) -> Callable[[Writer], Deposited]:
        """The job appending ``d`` (all its entries or none); ``window_of(establishment)``
        gives that establishment's signing window."""

        def job(w: Writer) -> Deposited:
            known = w.idempotency(d.scope, d.key)
            if known is not None:
                if known.body_hash is None:  # destroyed by retention with the data it hashed
                    raise Refused(
                        "idempotency_key_reused",
                        "Idempotency key reused",
                        f"the Idempotency-Key {d.key!r} was used for a deposit whose personal "
                        "data retention has since destroyed; use a new key",
                    )
                if known.body_hash != d.body_hash:
                    raise Refused(
                        "idempotency_key_reused",
                        "Idempotency key reused",
                        f"the Idempotency-Key {d.key!r} was used for another body; use a new "
                        "key for a new request",
                    )
                receipts = tuple(
                    self._receipt(w, i)
                    for i in range(known.first_idx, known.first_idx + known.count)
                )
                self._journal(
                    w,
                    replace(
                        d.journal,
                        outcome="replayed",
                        status=201 if all(r.sealed for r in receipts) else 202,
                    ),
                )
                return Deposited(receipts=receipts, batch=known.batch, replayed=True)
            size = self.size
            sessions: dict[tuple[str, str], SessionState] = {}
            session_rows: list[SessionRow] = []
            received = parse_time(d.received_at)
            for n, p in enumerate(d.prepared):
                e = p.entry
                skey = (e.establishment, e.session.id)
                state = sessions.get(skey, self.sessions.get(skey))
                target_found = None
                if e.kind is Kind.CORRECTION and e.corrects is not None:
                    target_found = self._same_establishment(w, e.corrects, e.establishment, d, size)
                try:
                    check(
                        e,
                        state=state,
                        window=window_of(e.establishment),
                        received_at=received,
                        correction_target_found=target_found,
                    )
                except Refused as r:
                    if not d.batch:
                        raise
                    raise Refused(
                        r.code, r.title, f"/entries/{n}: {r.detail}", status=r.status
                    ) from r
                new_state = next_state(state, e)
                if new_state is not None and new_state != state:
                    sessions[skey] = new_state
                    session_rows.append(
                        SessionRow(
                            idx=size + n,
                            establishment=e.establishment,
                            session_id=e.session.id,
                            version=new_state.version,
                            start_at=utc_text(new_state.start),
                            end_at=utc_text(new_state.end),
                            cancelled=new_state.cancelled,
                        )
                    )
            # Every check passed: write.
            edge = dict(self.edge)

            def node(level: int, index: int) -> bytes:
                h = edge.get((level, index)) or w.node(level, index)
                if h is None:
                    raise RuntimeError(f"tree node ({level}, {index}) missing")
                return h

            made: list[Receipt] = []
            for n, p in enumerate(d.prepared):
                idx = size + n
                e = p.entry
                w.add_entry(
                    EntryRow(
                        idx=idx,
                        establishment=e.establishment,
                        kind=str(e.kind),
                        session_id=e.session.id,
                        occurred_at=utc_text(e.occurred_at),
                        received_at=d.received_at,
                        corrects=e.corrects,
                        leaf=p.leaf.data,
                        leaf_hash=p.leaf.hash,
                    )
                )
                if p.leaf.disclosures:
                    body = json.dumps(p.leaf.disclosures, ensure_ascii=False, sort_keys=True)
                    w.add_disclosure(idx, e.establishment, p.lookup, body)
                if p.seal is not None:
                    w.add_seal(replace(p.seal, idx=idx))

                for level, index, h in merkle.new_nodes(idx, p.leaf.hash, node):
                    w.add_node(level, index, h)
                    edge[level, index] = h
                keep = _frontier(idx + 1)
                for k in [k for k in edge if k not in keep]:
                    del edge[k]
                made.append(
                    Receipt(
                        index=idx,
                        leaf_hash=p.leaf.hash,
                        sealed=p.seal is not None,
                        gen_time=None if p.seal is None else p.seal.gen_time,
                        token=None if p.seal is None else p.seal.token,
                    )
                )
            for row in session_rows:
                w.add_session(row)
            w.add_idempotency(
                IdempotencyRow(
                    scope=d.scope,
                    key=d.key,
                    body_hash=d.body_hash,
                    first_idx=size,
                    count=len(d.prepared),
                    batch=d.batch,
                    created_at=d.received_at,
                )
            )
            receipts = tuple(made)
            status = 201 if all(r.sealed for r in receipts) else 202
            self._journal(
                w, replace(d.journal, outcome="ok", status=status, target=f"entries/{size}")
            )
            # Written: now the memory follows.
            self.size = size + len(d.prepared)
            self.edge = edge
            self.sessions.update(sessions)
            return Deposited(receipts=receipts, batch=d.batch, replayed=False)

        return job

    def journal(self, record: JournalRecord) -> Callable[[Writer], None]:
        def job(w: Writer) -> None:
            self._journal(w, record)

        return job

    def seals(self, rows: Sequence[SealRow]) -> Callable[[Writer], int]:
        """The job storing tokens the sealer got for pending entries (each once)."""

        def job(w: Writer) -> int:
            stored = [row.idx for row in rows if w.seal(row.idx) is None]
            for row in rows:
                if row.idx in stored:
                    w.add_seal(row)
            if stored:  # journaled, so that a deleted seal is a broken promise verify sees
                self._journal(w, _vault_record(rows[0].sealed_at, "seal", _targets(stored)))
            return len(stored)

        return job

    def checkpoint(self, row: CheckpointRow) -> Callable[[Writer], bool]:
        def job(w: Writer) -> bool:
            latest = w.latest_checkpoint()
            if latest is not None and latest.size >= row.size:
                return False
            w.add_checkpoint(row)
            self._journal(w, _vault_record(row.created_at, "checkpoint", f"checkpoints/{row.size}"))
            return True

        return job

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _journal(w: Writer, record: JournalRecord) -> None:
        append(w, record)

    def _same_establishment(
        self, w: Writer, idx: int, establishment: str, d: Deposit, size: int
    ) -> bool:
        if 0 <= idx < size:
            row = w.entry(idx)
            return row is not None and row.establishment == establishment
        n = idx - size  # an earlier entry of the same batch
        return 0 <= n < len(d.prepared) and d.prepared[n].entry.establishment == establishment

    @staticmethod
    def _receipt(r: Reader, idx: int) -> Receipt:
        row = r.entry(idx)
        assert row is not None
        seal = r.seal(idx)
        return Receipt(
            index=idx,
            leaf_hash=row.leaf_hash,
            sealed=seal is not None,
            gen_time=None if seal is None else seal.gen_time,
            token=None if seal is None else seal.token,
        )


def _vault_record(at: str, action: str, target: str) -> JournalRecord:
    """A journal record of the vault's own doing (sealing the backlog, a checkpoint)."""
    return JournalRecord(
        at=at, actor="vault", role="vault", establishment=None, action=action,
        target=target, outcome="ok", status=0,
    )  # fmt: skip


def _targets(indices: Sequence[int]) -> str:
    return "entries " + ",".join(str(i) for i in indices)
