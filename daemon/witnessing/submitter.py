"""Each new checkpoint submitted to every configured witness; their cosignatures kept.

One task per witness follows the log: woken by :meth:`Witnessing.checkpointed` (the vault
calls it after each new checkpoint; it only sets an event, so appends and checkpoints never
wait for a witness) and every ``retry_interval_s`` while the witness is behind, it submits
the *latest* checkpoint (a witness that was away needs only the latest: the consistency
proof spans the gap) with ``old <size>`` = the size that witness last cosigned, as far as
the vault knows — from the ``cosignatures`` table at start, 0 for a new witness.

- 200: the answer's line by the witness's configured key must verify over the checkpoint;
  it is then stored (``cosignatures``, through the committer) and the witness is up to date.
- 409: the witness knows another size (its body says which, ``text/x.tlog.size``): the
  vault submits once more from that size (a witness restored from an older state, or one
  whose 200 the vault never stored). A size above the vault's latest checkpoint is not
  retried: the vault's log would have been rolled back — logged as an error.
- 422 (the witness finds the checkpoint inconsistent with what it cosigned: a fork or a
  rollback), 403 (it does not trust the vault's key), 404 (it does not witness this
  origin), other statuses, a timeout, no connection: logged with the witness's name and
  the status, counted in ``failures``, retried later. The log is written when the reason
  changes, not at each retry.

The witnesses work concurrently and independently: a witness that hangs costs its own task
up to ``timeout_s`` per attempt, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import aiohttp

from daemon import merkle
from daemon.clock import parse_time, utc_now, utc_text
from daemon.errors import VaultError
from daemon.store import CheckpointRow, Store, Writer, node_lookup
from daemon.witnessing import cosignatures
from daemon.witnessing.client import Answer, Unreachable, add_checkpoint, request_body
from daemon.witnessing.cosignatures import CosignatureRow, checkpoint_text
from daemon.witnessing.policy import Cosigned, Policy, Witness, WitnessingConfig, WitnessingError

T = TypeVar("T")
Write = Callable[[Callable[[Writer], T]], Awaitable[T]]

log = logging.getLogger("horodate.vault.witnessing")

_CACHE_MAX: Final = 32  # cosigned checkpoints whose lines were verified, kept for reads


@dataclass(slots=True)
class Progress:
    """What the vault knows of one witness (``/health``, ``/metrics``)."""

    witness: Witness
    known_size: int = 0  # the size it last cosigned, as far as the vault knows: the next "old"
    cosigned_size: int | None = None  # the largest checkpoint whose cosignature is stored
    cosigned_received: dt.datetime | None = None  # when the vault stored that cosignature
    attempted_size: int | None = None  # the checkpoint of the last attempt, whatever came of it
    attempts: int = 0
    failures: int = 0
    conflicts: int = 0  # 409s
    last_status: int | None = None  # the last answer's HTTP status; None: no answer
    last_failure: str = ""  # empty while the last attempt succeeded
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def state(self) -> str:
        if self.last_failure:
            return "failing"
        return "waiting" if self.cosigned_size is None else "ok"

    def to_json(self, now: dt.datetime) -> dict[str, Any]:
        age = (
            None
            if self.cosigned_received is None
            else max(0.0, (now - self.cosigned_received).total_seconds())
        )
        return {
            "name": self.witness.name,
            "url": self.witness.url,
            "state": self.state,
            "cosigned_size": self.cosigned_size,
            "cosigned_age_s": age,
            "attempts": self.attempts,
            "failures": self.failures,
            "conflicts": self.conflicts,
            "last_status": self.last_status,
            "last_failure": self.last_failure or None,
        }


class Witnessing:
    """The vault's side of its witnesses: submit, keep, publish. Without witnesses
    configured it does nothing and publishes the vault's notes as they are."""

    def __init__(
        self,
        config: WitnessingConfig,
        *,
        store: Store,
        write: Write[Any],
        now: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.config = config
        self.store = store
        self._write = write
        self._now = now
        self.progress = [Progress(w) for w in config.witnesses]
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._changed: asyncio.Condition | None = None
        self._verified: dict[tuple[int, tuple[str, ...]], tuple[str, Cosigned]] = {}

    @property
    def policy(self) -> Policy:
        return self.config.policy

    # -- life ---------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.progress:
            return
        latest = cosignatures.latest_per_witness(self.store.reader())
        for p in self.progress:
            row = latest.get(p.witness.name)
            if row is not None:
                p.known_size = p.cosigned_size = row.size
                p.cosigned_received = parse_time(row.received_at)
        self._changed = asyncio.Condition()
        self._session = aiohttp.ClientSession()
        self._tasks = [
            asyncio.create_task(self._follow(p), name=f"vault-witness-{p.witness.name}")
            for p in self.progress
        ]
        log.info(
            "vault: %d witness(es), a checkpoint counts with %d cosignature(s): %s",
            len(self.progress),
            self.policy.quorum,
            ", ".join(f"{p.witness.name} at {p.witness.url}" for p in self.progress),
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    def checkpointed(self, size: int) -> None:
        """A new checkpoint of ``size`` is stored: every witness task is woken (returns at
        once)."""
        for p in self.progress:
            if p.cosigned_size != size:
                p.wake.set()

    async def wait_witnessed(self, size: int, timeout_s: float) -> None:
        """Return once a checkpoint of at least ``size`` has the quorum's cosignatures, or
        every witness has answered (or failed) an attempt at such a checkpoint, or after
        ``timeout_s``: what an audit waits for before it picks its checkpoint."""
        changed = self._changed
        if changed is None:
            return

        def settled() -> bool:
            cosigned = [p for p in self.progress if (p.cosigned_size or -1) >= size]
            if len(cosigned) >= self.policy.quorum:
                return True
            return all((p.attempted_size or -1) >= size for p in self.progress)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), changed:
                await changed.wait_for(settled)

    # -- reading ------------------------------------------------------------------------

    def published(self, checkpoint: CheckpointRow) -> tuple[str, Cosigned]:
        """The checkpoint's cosigned note (the vault's note and the configured witnesses'
        stored cosignatures that verify) and what they amount to. A stored line that does
        not verify is left out and logged: ``vault verify`` names it."""
        reader = self.store.reader()
        lines = tuple(row.line for row in cosignatures.of_checkpoint(reader, checkpoint.size))
        key = (checkpoint.size, lines)
        hit = self._verified.get(key)
        if hit is not None:
            return hit
        note, result = cosignatures.cosigned(reader, self.policy, checkpoint)
        for bad in result.bad:
            log.error("vault: stored cosignature of checkpoint %d: %s", checkpoint.size, bad)
        if len(self._verified) >= _CACHE_MAX:
            self._verified.pop(next(iter(self._verified)))
        self._verified[key] = (note, result)
        return note, result

    def published_json(self, checkpoint: CheckpointRow | None) -> tuple[str | None, Any]:
        """``(cosigned note, witnessing summary)`` for a JSON answer (None, None without a
        checkpoint; the summary is None without witnesses configured)."""
        if checkpoint is None:
            return None, None
        note, result = self.published(checkpoint)
        return note, (result.to_json() if self.progress else None)

    def published_at(self, size: int) -> tuple[str | None, Any]:
        """:meth:`published_json` of the checkpoint of exactly ``size`` entries, if any."""
        return self.published_json(cosignatures.checkpoint_of_size(self.store.reader(), size))

    def status(self) -> dict[str, Any]:
        """For ``/health``: each witness, and whether the latest checkpoint counts."""
        now = self._now()
        latest = self.store.reader().latest_checkpoint()
        witnessed = None
        if self.progress and latest is not None:
            witnessed = {"size": latest.size, **self.published(latest)[1].to_json()}
        return {
            "witnesses": [p.to_json(now) for p in self.progress],
            "checkpoint_witnessed": witnessed,
        }

    # -- one witness --------------------------------------------------------------------

    async def _follow(self, p: Progress) -> None:
        first = True
        while True:
            if not first:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(p.wake.wait(), self.config.retry_interval_s)
            first = False
            p.wake.clear()
            try:
                await self._catch_up(p)
            except VaultError as e:  # the store, or an answer we cannot use
                self._failed(p, str(e), p.last_status)
            except Exception as e:  # a bug must not end the task: the witness would be lost
                log.exception("vault: witnessing %s failed", p.witness.name)
                self._failed(p, f"internal error: {e}", None)
            assert self._changed is not None
            async with self._changed:
                self._changed.notify_all()

    async def _catch_up(self, p: Progress) -> None:
        latest = self.store.reader().latest_checkpoint()
        if latest is None or p.cosigned_size == latest.size:
            return
        p.attempts += 1
        try:
            await self._attempt(p, latest)
        finally:
            p.attempted_size = latest.size

    async def _attempt(self, p: Progress, latest: CheckpointRow) -> None:
        try:
            answer = await self._submit(p, p.known_size, latest)
            if answer.status == 409 and answer.known_size is not None:
                p.conflicts += 1
                if answer.known_size > latest.size:
                    self._failed(
                        p,
                        f"it knows size {answer.known_size}, above the vault's latest checkpoint "
                        f"({latest.size}): was the vault's log rolled back?",
                        409,
                        error=True,
                    )
                    return
                log.info(
                    "vault: witness %s knows size %d (the vault thought %d): submitting "
                    "checkpoint %d again from it",
                    p.witness.name,
                    answer.known_size,
                    p.known_size,
                    latest.size,
                )
                p.known_size = answer.known_size
                answer = await self._submit(p, p.known_size, latest)
        except Unreachable as e:
            self._failed(p, f"unreachable: {e}", None)
            return
        if answer.status == 200:
            await self._keep(p, latest, answer)
        else:
            self._refused(p, latest.size, answer)

    async def _submit(self, p: Progress, old: int, checkpoint: CheckpointRow) -> Answer:
        assert self._session is not None
        old = min(old, checkpoint.size)
        proof: list[bytes] = []
        if 0 < old < checkpoint.size:  # RFC 9162 §2.1.4; none from 0 nor between equal sizes
            proof = merkle.consistency_proof(old, checkpoint.size, node_lookup(self.store.reader()))
        body = request_body(old, proof, checkpoint.note)
        return await add_checkpoint(
            self._session, p.witness.url, body, timeout_s=self.config.timeout_s
        )

    async def _keep(self, p: Progress, checkpoint: CheckpointRow, answer: Answer) -> None:
        lines = [x for x in answer.text.split("\n") if x]
        mine = Policy(verifiers=(p.witness.verifier,), quorum=1)
        try:
            result = mine.check(checkpoint_text(checkpoint.note), lines)
        except WitnessingError as e:
            self._failed(p, f"answered 200 with no cosignature line: {e}", 200, error=True)
            return
        if result.bad or not result.cosignatures:
            why = result.bad[0] if result.bad else "no line of its configured key"
            self._failed(p, f"answered 200 but {why} (is its vkey right?)", 200, error=True)
            return
        c = result.cosignatures[0]
        now = self._now()
        row = CosignatureRow(
            size=checkpoint.size,
            witness=c.witness,
            key_id=c.key_id,
            line=c.line,
            cosigned_at=c.timestamp,
            received_at=utc_text(now),
        )
        await self._write(lambda w: cosignatures.add(w, row))
        if p.last_failure:
            log.info("vault: witness %s cosigns again (checkpoint %d)", p.witness.name, row.size)
        p.known_size = p.cosigned_size = checkpoint.size
        p.cosigned_received = now
        p.last_status, p.last_failure = 200, ""

    def _refused(self, p: Progress, size: int, answer: Answer) -> None:
        why = {
            403: "it does not trust the vault's signature: add the vault's key to it "
            "(`horodate witness add-log`)",
            404: "it does not witness this vault's origin (`horodate witness add-log`)",
            409: "it knows another size again",
            422: "it finds the checkpoint inconsistent with what it cosigned before: "
            "a fork or a rollback of the vault's log",
        }.get(answer.status, "refused")
        self._failed(
            p,
            f"checkpoint {size}: {why} ({answer.reason()})",
            answer.status,
            error=answer.status in (403, 404, 422),
        )

    def _failed(self, p: Progress, why: str, status: int | None, *, error: bool = False) -> None:
        p.failures += 1
        p.last_status = status
        if why != p.last_failure:
            level = logging.ERROR if error else logging.WARNING
            log.log(
                level,
                "vault: witness %s (%s): %s; retried every %g s",
                p.witness.name,
                p.witness.url,
                why,
                self.config.retry_interval_s,
            )
        p.last_failure = why
