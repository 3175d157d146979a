"""The vault assembled: store, committer, sequencer, sealing, checkpoints — and its operations.

The HTTP layer (:mod:`daemon.http.app`) authenticates, parses and maps errors; this class
does what a call asks, for a :class:`Caller`, and journals it. Sealing is part of the
append: a deposit asks the TSA for each leaf's token *before* sequencing (the leaf hash
does not depend on the index), waits at most ``inline_seal_timeout_s``, and the entry is
stored with its token in the same transaction — one fsync, and the receipt is a 201 with
the token. When the TSA refuses or is down, the entry is stored without, the receipt is a
202, and :mod:`daemon.sealer` seals the backlog, oldest first, as soon as tokens come back.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from daemon import merkle
from daemon.clock import utc_now, utc_text
from daemon.committer import Committer
from daemon.errors import VaultError
from daemon.journal import JournalRecord
from daemon.keys import Role, VaultKeys, load_or_create
from daemon.leaf import make_leaf, open_leaf, student_lookup
from daemon.lockfile import DataDirLock
from daemon.note import Checkpoint, sign_checkpoint, verify_checkpoint
from daemon.records import Entry, entry_to_json
from daemon.sequencer import Deposit, Deposited, Prepared, Sequencer, body_hash
from daemon.store import CheckpointRow, Reader, SealRow, Store, StoreFull, node_lookup
from daemon.witnessing import Witnessing, WitnessingConfig
from timestamping.aio_client import AsyncTsaClient, Seal
from timestamping.errors import TimestampingError

T = TypeVar("T")

log = logging.getLogger("horodate.vault")

DEFAULT_SIGNING_WINDOW: Final = dt.timedelta(minutes=15)
MIN_SIGNING_WINDOW: Final = dt.timedelta(minutes=1)
MAX_SIGNING_WINDOW: Final = dt.timedelta(days=10)


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultConfig:
    data_dir: Path
    name: str = "horodate-vault"  # the checkpoints' origin line: kept for life
    tsa_urls: tuple[str, ...] = ("http://127.0.0.1:3180/tsa",)
    tsa_ca: Path | None = None  # the roots tokens must chain to (of every TSA)...
    tsa_cas: tuple[Path, ...] = ()  # ...or each TSA's own, one per URL (one PKI per site)
    tsa_verify_processes: int = 0  # processes verifying tokens beside the event loop (0: none)
    inline_seal_timeout_s: float = 2.0
    checkpoint_interval_s: float = 5.0
    sealer_interval_s: float = 1.0
    body_max_bytes: int = 1024 * 1024
    batch_max_entries: int = 1000
    min_free_bytes: int = 4 * 1024 * 1024  # below this, appends are refused (507)
    signing_window: dt.timedelta = DEFAULT_SIGNING_WINDOW
    windows: dict[str, dt.timedelta] = field(default_factory=dict)  # per establishment
    # the witnesses each checkpoint is submitted to, and the quorum (daemon.witnessing)
    witnessing: WitnessingConfig = field(default_factory=WitnessingConfig)

    def tsa_roots(self) -> list[bytes]:
        """The roots of each TSA, in the order of :attr:`tsa_urls` (empty: none given)."""
        if self.tsa_cas:
            return [p.read_bytes() for p in self.tsa_cas]
        return [] if self.tsa_ca is None else [self.tsa_ca.read_bytes()] * len(self.tsa_urls)

    def __post_init__(self) -> None:
        if self.tsa_cas and len(self.tsa_cas) != len(self.tsa_urls):
            raise VaultError(
                f"{len(self.tsa_urls)} TSAs and {len(self.tsa_cas)} sets of roots: give one "
                "PEM for every TSA, or one per TSA in the same order"
            )
        for where, w in [("default", self.signing_window), *self.windows.items()]:
            if not MIN_SIGNING_WINDOW <= w <= MAX_SIGNING_WINDOW:
                raise VaultError(
                    f"signing window for {where} is {w}: it must be from 1 minute to 10 days"
                )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: from the bearer token (or ``public`` for the log's public half)."""

    role: str
    establishment: str | None
    label: str

    @classmethod
    def public(cls) -> Caller:
        return cls(role="public", establishment=None, label="anonymous")


class NotFound(VaultError):
    """What the caller may not see, or what does not exist: the same answer (404)."""


class Forbidden(VaultError):
    """The caller's role may not do this (403)."""


# How long a token takes, from the request to the verified seal (seconds): the buckets of
# ``horodate_vault_seal_seconds``. The inline deadline (2 s by default) caps what counts.
SEAL_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class SealerStats:
    sealed_inline: int = 0
    sealed_later: int = 0
    tsa_failures: int = 0
    last_failure: str = ""
    # seals at the append, by SEAL_BUCKETS_S (one more: above the last), and their sum
    seal_counts: list[int] = field(default_factory=lambda: [0] * (len(SEAL_BUCKETS_S) + 1))
    seal_seconds: float = 0.0

    def observe_seal(self, seconds: float) -> None:
        self.seal_counts[bisect.bisect_left(SEAL_BUCKETS_S, seconds)] += 1
        self.seal_seconds += seconds


class Vault:
    def __init__(self, config: VaultConfig, *, tsa: AsyncTsaClient | None = None) -> None:
        self.config = config
        self.keys: VaultKeys = load_or_create(config.data_dir / "keys", config.name)
        self.store = Store.open(config.data_dir)
        self.sequencer = Sequencer()
        self.committer = Committer(self.store, on_rollback=self.sequencer.load)
        self.tsa = tsa
        self.sealing = SealerStats()
        self.witnessing = Witnessing(config.witnessing, store=self.store, write=self.committer.run)
        self._tasks: list[asyncio.Task[None]] = []
        self._dir_lock: DataDirLock | None = None  # taken by start(): daemon.lockfile
        self._wake_sealer = asyncio.Event()
        # Reads too long for the event loop run here; stop() waits for them before it closes
        # the store (closing a connection another thread is using crashes SQLite's module).
        self._reading = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vault-read")
        self.started_at = utc_now()
        self.disk_full = False

    # -- life ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._dir_lock = DataDirLock.take(self.config.data_dir)  # refuses a second vault
        try:
            self.sequencer.load(self.store.writer)
            self._check_head()
        except BaseException:
            self._dir_lock.release()
            raise
        self.committer.start()
        await self.witnessing.start()  # its tasks submit each checkpoint, never in the way
        roots = _union(self.config.tsa_roots())
        if roots:
            copy = self.config.data_dir / "keys" / "tsa-ca.pem"
            if not copy.exists() or copy.read_bytes() != roots:
                copy.write_bytes(roots)  # what `vault verify` checks the tokens against
        if self.store.reader().latest_checkpoint() is None:
            await self.make_checkpoint()
        self._tasks = [
            asyncio.create_task(self._sealer_loop(), name="vault-sealer"),
            asyncio.create_task(self._checkpoint_loop(), name="vault-checkpoints"),
        ]
        log.info(
            "vault %s open: %d entries, %d pending seal",
            self.config.name,
            self.sequencer.size,
            self.store.reader().pending_count(),
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:  # a loop that died must not keep the store open
                log.exception("vault: %s had failed", t.get_name())
        await self.witnessing.stop()  # before the committer: its tasks write through it
        # a cancelled task's read may still run in its thread: let it end first
        await asyncio.get_running_loop().run_in_executor(None, self._reading.shutdown)
        self.committer.stop()
        self.store.close()
        if self._dir_lock is not None:
            self._dir_lock.release()

    def _check_head(self) -> None:
        """Before serving: the latest checkpoint is signed by this vault's key and the
        stored tree still has its root (a few node reads). `vault verify` checks the rest."""
        reader = self.store.reader()
        latest = reader.latest_checkpoint()
        if latest is None:
            return
        try:
            cp = verify_checkpoint(latest.note, self.keys.signer.verifier())
        except VaultError as e:
            raise VaultError(
                f"the latest checkpoint ({latest.size}) does not verify with this vault's key "
                f"({e}): refusing to serve; run horodate vault verify"
            ) from None
        try:
            root = merkle.root(cp.size, node_lookup(reader))
        except VaultError as e:
            root = f"not computable: {e}".encode()
        if root != cp.root:
            raise VaultError(
                f"the stored tree does not match the latest checkpoint ({cp.size} entries): "
                "refusing to serve; run horodate vault verify"
            )

    def dead_loops(self) -> list[str]:
        """The vault's background loops (sealer, checkpoints) that ended while it runs."""
        return [t.get_name() for t in self._tasks if t.done()]

    async def read_in_thread(self, fn: Callable[[], T]) -> T:
        """``fn()`` (which reads the store) in a reading thread, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._reading, fn)

    # -- deposit ------------------------------------------------------------------------

    def window_of(self, establishment: str) -> dt.timedelta:
        return self.config.windows.get(establishment, self.config.signing_window)

    async def deposit(
        self,
        entries: Sequence[Entry],
        *,
        body: object,
        batch: bool,
        key: str,
        caller: Caller,
        received_at: dt.datetime,
    ) -> Deposited:
        """Append ``entries`` (all or none) for ``caller``; the receipts once durable."""
        if caller.role != Role.ESTABLISHMENT:
            raise Forbidden("only an establishment's token deposits entries")
        for n, e in enumerate(entries):
            if e.establishment != caller.establishment:
                where = f"/entries/{n}/establishment" if batch else "/establishment"
                raise Forbidden(f"{where}: this token writes for {caller.establishment!r} only")
        self.check_space()
        received_text = utc_text(received_at)
        leaves = [make_leaf(entry_to_json(e), received_at=received_text) for e in entries]
        seals = await self._seal_inline([leaf.hash for leaf in leaves])
        prepared = tuple(
            Prepared(
                entry=e,
                leaf=leaf,
                lookup=None
                if e.student is None
                else student_lookup(
                    self.keys.lookup_secret,
                    e.establishment,
                    e.student.ine,
                    e.student.birth_date.isoformat(),
                ),
                seal=seal,
            )
            for e, leaf, seal in zip(entries, leaves, seals, strict=True)
        )
        deposit = Deposit(
            prepared=prepared,
            scope=f"{caller.role}:{caller.establishment}",
            key=key,
            body_hash=body_hash(body),
            batch=batch,
            received_at=received_text,
            journal=self._record(caller, "POST /v1/entries", None, "ok", 201, received_at),
        )
        try:
            done = await self.committer.run(
                self.sequencer.deposit(deposit, window_of=self.window_of)
            )
        except StoreFull:
            self.disk_full = True
            log.error("vault: the disk is full; appends are refused (507) until space returns")
            raise
        self.disk_full = False
        if not all(r.sealed for r in done.receipts):
            self._wake_sealer.set()
        return done

    def check_space(self) -> None:
        free = shutil.disk_usage(self.config.data_dir).free
        if free < self.config.min_free_bytes:
            self.disk_full = True
            raise StoreFull(
                f"only {free} bytes free on the vault's disk (the vault keeps "
                f"{self.config.min_free_bytes} in reserve): appends refused until space returns"
            )

    async def _seal_inline(self, hashes: list[bytes]) -> list[SealRow | None]:
        if self.tsa is None:
            return [None] * len(hashes)
        tsa = self.tsa

        async def one(h: bytes) -> SealRow | None:
            asked = time.perf_counter()
            try:
                seal = await asyncio.wait_for(tsa.seal(h), self.config.inline_seal_timeout_s)
            except (TimestampingError, TimeoutError) as e:
                self._note_tsa_failure(e)
                return None
            self.sealing.observe_seal(time.perf_counter() - asked)
            self.sealing.sealed_inline += 1
            return _seal_row(-1, seal)

        return list(await asyncio.gather(*(one(h) for h in hashes)))

    def _note_tsa_failure(self, e: BaseException) -> None:
        text = str(e) or type(e).__name__
        if self.sealing.last_failure != text:
            log.warning("vault: no token from the TSA, entries stay pending: %s", text)
        self.sealing.tsa_failures += 1
        self.sealing.last_failure = text

    # -- the sealer ---------------------------------------------------------------------

    async def _sealer_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_sealer.wait(), self.config.sealer_interval_s)
            self._wake_sealer.clear()
            try:
                await self.seal_backlog()
            except VaultError as e:
                log.warning("vault: sealing the backlog failed: %s", e)

    async def seal_backlog(self, *, chunk: int = 64) -> int:
        """Seal pending entries, oldest first, until none is left or the TSA fails."""
        if self.tsa is None:
            return 0
        tsa = self.tsa
        total = 0
        while True:
            pending = await self.read_in_thread(lambda: self.store.reader().pending(chunk))
            if not pending:
                return total
            try:
                got = await asyncio.gather(*(tsa.seal(h) for _, h in pending))
            except TimestampingError as e:
                self._note_tsa_failure(e)
                return total
            rows = [_seal_row(idx, seal) for (idx, _), seal in zip(pending, got, strict=True)]
            stored = await self.committer.run(self.sequencer.seals(rows))
            self.sealing.sealed_later += stored
            total += stored
            if self.sealing.last_failure:
                log.info("vault: the TSA answers again; %d pending entries sealed", stored)
                self.sealing.last_failure = ""

    # -- checkpoints --------------------------------------------------------------------

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.checkpoint_interval_s)
            try:
                latest = self.store.reader().latest_checkpoint()
                if latest is None or latest.size < self.store.reader().size():
                    await self.make_checkpoint()
            except VaultError as e:
                log.warning("vault: no new checkpoint: %s", e)

    async def make_checkpoint(self) -> CheckpointRow:
        """Sign the tree head at the committed size, time-stamp the note, keep both."""
        reader = self.store.reader()
        size = reader.size()  # committed: the sequencer's may be ahead of the COMMIT
        root = merkle.root(size, node_lookup(reader))
        note = sign_checkpoint(
            Checkpoint(origin=self.config.name, size=size, root=root), self.keys.signer
        )
        token = None
        if self.tsa is not None:
            import hashlib

            try:
                seal = await asyncio.wait_for(
                    self.tsa.seal(hashlib.sha256(note.encode()).digest()),
                    self.config.inline_seal_timeout_s,
                )
                token = seal.reply_der
            except (TimestampingError, TimeoutError) as e:
                self._note_tsa_failure(e)
        row = CheckpointRow(size=size, note=note, token=token, created_at=utc_text(utc_now()))
        if await self.committer.run(self.sequencer.checkpoint(row)):
            self.witnessing.checkpointed(size)  # wakes the witnesses' tasks; does not wait
        return row

    # -- reads --------------------------------------------------------------------------

    def _visible(self, reader: Reader, idx: int, caller: Caller) -> Any:
        row = reader.entry(idx) if idx >= 0 else None
        if row is None or caller.role not in (Role.ESTABLISHMENT, Role.AUDITOR):
            raise NotFound(f"no entry {idx}")
        if row.establishment != caller.establishment:
            raise NotFound(f"no entry {idx}")  # another's entry: as if it did not exist
        return row

    def read_entry(self, idx: int, caller: Caller) -> dict[str, Any]:
        import base64

        reader = self.store.reader()
        row = self._visible(reader, idx, caller)
        disclosure = reader.disclosure(idx)
        entry = open_leaf(row.leaf, json.loads(disclosure) if disclosure else {})
        seal = reader.seal(idx)
        checkpoint = reader.latest_checkpoint()
        inclusion = None
        if checkpoint is not None and idx < checkpoint.size:
            hashes = merkle.inclusion_proof(idx, checkpoint.size, node_lookup(reader))
            inclusion = {"tree_size": checkpoint.size, "hashes": [h.hex() for h in hashes]}
        cosigned, witnessing = self.witnessing.published_json(checkpoint)
        return {
            "index": idx,
            "entry": entry,
            "leaf": base64.b64encode(row.leaf).decode(),
            "leaf_hash": row.leaf_hash.hex(),
            "sealed": seal is not None,
            "gen_time": None if seal is None else seal.gen_time,
            "token": None if seal is None else base64.b64encode(seal.token).decode(),
            "tsa": None if seal is None else seal.tsa,
            "inclusion": inclusion,
            "checkpoint": cosigned,  # the vault's note, its witnesses' cosignatures appended
            "witnessing": witnessing,
            "corrections": reader.corrections_of(idx),
            "received_at": row.received_at,
        }

    def metadata(self, idx: int, caller: Caller) -> dict[str, Any]:
        """NF Z42-020 "technical metadata": no personal data, only what the vault knows."""
        reader = self.store.reader()
        row = self._visible(reader, idx, caller)
        seal = reader.seal(idx)
        return {
            "index": idx,
            "leaf_hash": row.leaf_hash.hex(),
            "leaf_bytes": len(row.leaf),
            "digest_algorithm": "sha-256",
            "deposited_at": row.received_at,
            "kind": row.kind,
            "sealed": seal is not None,
            "gen_time": None if seal is None else seal.gen_time,
            "token_bytes": None if seal is None else len(seal.token),
            "tsa": None if seal is None else seal.tsa,
        }

    def check_entry(self, idx: int, caller: Caller) -> dict[str, Any]:
        """NF Z42-020 "integrity check" of one entry, recomputed now: leaf, token, proof."""
        from timestamping.verify import verify_reply

        reader = self.store.reader()
        row = self._visible(reader, idx, caller)
        checks: dict[str, Any] = {}
        checks["leaf_hash"] = merkle.leaf_hash(row.leaf) == row.leaf_hash
        disclosure = reader.disclosure(idx)
        try:
            open_leaf(row.leaf, json.loads(disclosure) if disclosure else {})
            checks["commitments"] = True
        except VaultError:
            checks["commitments"] = False
        seal = reader.seal(idx)
        if seal is None:
            checks["token"] = "pending"
        else:
            try:
                verify_reply(seal.token, message_imprint=row.leaf_hash, ca_pem=self.ca_pem())
                checks["token"] = True
            except (TimestampingError, OSError):
                checks["token"] = False
        checkpoint = reader.latest_checkpoint()
        if checkpoint is None or idx >= checkpoint.size:
            checks["inclusion"] = "not yet in a checkpoint"
        else:
            cp = Checkpoint.parse(checkpoint.note.split("\n\n", 1)[0] + "\n")
            node = node_lookup(reader)
            proof = merkle.inclusion_proof(idx, cp.size, node)
            try:
                merkle.verify_inclusion(idx, cp.size, row.leaf_hash, proof, cp.root)
                checks["inclusion"] = True
            except VaultError:
                checks["inclusion"] = False
        ok = all(v is True or isinstance(v, str) for v in checks.values())
        return {"index": idx, "ok": ok, "checks": checks}

    def ca_pem(self) -> bytes:
        """The roots of every configured TSA, one PEM."""
        return (
            _union(self.config.tsa_roots())
            or (self.config.data_dir / "keys" / "tsa-ca.pem").read_bytes()
        )

    def list_entries(
        self,
        caller: Caller,
        *,
        ine: str | None,
        birth_date: str | None,
        session: str | None,
        occurred_from: str | None,
        occurred_to: str | None,
        limit: int,
        cursor: int,
    ) -> tuple[list[dict[str, Any]], int | None]:
        if caller.role not in (Role.ESTABLISHMENT, Role.AUDITOR) or caller.establishment is None:
            raise Forbidden("listing entries needs an establishment's or an auditor's token")
        lookup = None
        if ine is not None and birth_date is not None:
            lookup = student_lookup(self.keys.lookup_secret, caller.establishment, ine, birth_date)
        reader = self.store.reader()
        found = [
            row.idx
            for row in reader.find(
                caller.establishment,
                lookup=lookup,
                session_id=session,
                occurred_from=occurred_from,
                occurred_to=occurred_to,
                after=cursor,
                limit=limit + 1,
            )
        ]
        more = len(found) > limit
        found = found[:limit]
        items = [self._summary(reader, i) for i in found]
        return items, (found[-1] if more else None)

    def _summary(self, reader: Reader, idx: int) -> dict[str, Any]:
        row = reader.entry(idx)
        assert row is not None
        disclosure = reader.disclosure(idx)
        seal = reader.seal(idx)
        return {
            "index": idx,
            "entry": open_leaf(row.leaf, json.loads(disclosure) if disclosure else {}),
            "leaf_hash": row.leaf_hash.hex(),
            "sealed": seal is not None,
            "gen_time": None if seal is None else seal.gen_time,
            "corrections": reader.corrections_of(idx),
        }

    def count(self, caller: Caller) -> int:
        if caller.establishment is None:
            raise Forbidden("counting entries needs an establishment's or an auditor's token")
        return self.store.reader().count(caller.establishment)

    def journal_page(self, caller: Caller, *, start: int, limit: int) -> list[dict[str, Any]]:
        """NF Z42-020 "read the access journal": the admin sees all, an establishment its own."""
        if caller.role not in (Role.ADMIN, Role.ESTABLISHMENT):
            raise Forbidden("the access journal is for the operator and the establishment")
        out = []
        for seq, record, link in self.store.reader().journal(start, limit):
            data = json.loads(record)
            if caller.role == Role.ESTABLISHMENT and data["establishment"] != caller.establishment:
                continue
            out.append({"seq": seq, **data, "link": link.hex()})
        return out

    # -- proofs (public) ----------------------------------------------------------------

    def inclusion(self, idx: int, size: int) -> list[bytes]:
        reader = self.store.reader()
        if not 0 <= idx < size <= reader.size():
            raise NotFound(f"no inclusion proof for index {idx} in a tree of size {size}")
        return merkle.inclusion_proof(idx, size, node_lookup(reader))

    def consistency(self, first: int, second: int) -> list[bytes]:
        reader = self.store.reader()
        if not 0 < first <= second <= reader.size():
            raise NotFound(f"no consistency proof from size {first} to {second}")
        return merkle.consistency_proof(first, second, node_lookup(reader))

    # -- the journal --------------------------------------------------------------------

    def _record(
        self,
        caller: Caller,
        action: str,
        target: str | None,
        outcome: str,
        status: int,
        at: dt.datetime | None = None,
    ) -> JournalRecord:
        return JournalRecord(
            at=utc_text(at or utc_now()),
            actor=caller.label,
            role=caller.role,
            establishment=caller.establishment,
            action=action,
            target=target,
            outcome=outcome,
            status=status,
        )

    async def journal(
        self, caller: Caller, action: str, target: str | None, outcome: str, status: int
    ) -> None:
        """Journal one call (every call, reads and refusals included: NF Z42-020)."""
        record = self._record(caller, action, target, outcome, status)
        await self.committer.run(self.sequencer.journal(record))


def _union(pems: Sequence[bytes]) -> bytes:
    """The PEM files ``pems`` as one, each once (the same file given for two TSAs counts once)."""
    return b"".join(dict.fromkeys(p if p.endswith(b"\n") else p + b"\n" for p in pems))


def _seal_row(idx: int, seal: Seal) -> SealRow:
    return SealRow(
        idx=idx,
        token=seal.reply_der,
        gen_time=utc_text(seal.info.gen_time),
        sealed_at=utc_text(utc_now()),
        tsa=seal.tsa_url,
    )
