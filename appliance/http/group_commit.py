"""Group commit: replies wait for their tokens' issuance-log records, made durable a group
at a time (one hand-off to the log's writer and one callback per group, not per token).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

log = logging.getLogger(__name__)


# How long a group of tokens may wait for more requests before its records are committed.
GROUP_WAIT_S: Final = 0.0005


class Tokens(Protocol):
    """What the lane needs of the TSA (``appliance.issuance.issuer.TsaService``)."""

    def sign_all(self, bodies: Sequence[bytes]) -> list[tuple[bytes, bytes | None]]:
        """For each request: (reply DER, issuance-log record that must be durable first,
        or None)."""
        ...

    def commit(self, records: list[bytes], done: Callable[[bool], None]) -> None:
        """Have the records made durable; then ``done(True)``, or ``done(False)``: withhold
        their tokens. ``done`` runs in the event loop."""
        ...

    def withheld(self) -> bytes:
        """The reply in place of a token whose record is not durable."""
        ...


class Lane(Protocol):
    """A connection waiting for its replies (``appliance.http.fastlane.FastLane``)."""

    def reply(self, der: bytes | None, close: bool) -> None:
        """Send one answer (``None``: the TSA failed unexpectedly), then the next request."""
        ...

    def close(self) -> None:
        """Close the connection now."""
        ...


class Flush:
    """Replies waiting for their tokens' records, made durable a group at a time.

    The requests an event-loop iteration brings are signed together once it has read them
    all (``Tokens.sign_all``: the signatures back to back, where the key's tables stay in
    the processor's caches). A group is handed to the issuance log once an iteration brings
    no more requests, or :data:`GROUP_WAIT_S` after its first tokens were signed: while
    requests pour in, fewer and fuller commits (each costs the system its wake-ups and
    flushes, whatever its size); a request that comes alone waits one iteration, a few
    microseconds (ADR 0007).
    """

    def __init__(self, tokens: Tokens | None, *, group_wait_s: float = GROUP_WAIT_S) -> None:
        """``tokens``: the TSA; ``None``, an application without one: every request goes
        to aiohttp."""
        self._tokens = tokens
        self._group_wait_s = group_wait_s
        self.lanes: set[Lane] = set()  # the open connections, to close when stopping
        self._unsigned: list[tuple[Lane, bytes, bool]] = []  # read, not yet signed
        self._pending: list[tuple[Lane, bytes, bytes | None, bool]] = []  # signed
        self._scheduled = False
        self._seen = 0  # requests in the group at the last look
        self._first_at = 0.0  # when the group's first tokens were signed (monotonic)

    @property
    def serves_tokens(self) -> bool:
        return self._tokens is not None

    def add(self, lane: Lane, body: bytes, close: bool) -> None:
        """Answer ``lane``'s request ``body`` once signed and durable."""
        assert self._tokens is not None, "the lane hands requests over when there is no TSA"
        self._unsigned.append((lane, body, close))
        if not self._scheduled:
            self._scheduled = True
            self._seen = 0
            asyncio.get_running_loop().call_soon(self._when_quiet)

    def close_all(self) -> None:
        """Close every connection (the server stops: nothing is answered after this)."""
        for lane in list(self.lanes):
            lane.close()

    def _when_quiet(self) -> None:
        """Sign what the last iteration brought; commit the group, unless that was more
        requests and the group may still wait: then look again after the next."""
        if self._unsigned:
            self._sign()
        count = len(self._pending)
        if count > self._seen and time.monotonic() - self._first_at < self._group_wait_s:
            self._seen = count
            asyncio.get_running_loop().call_soon(self._when_quiet)
            return
        self._run()

    def _sign(self) -> None:
        assert self._tokens is not None  # unsigned only fills through add()
        batch, self._unsigned = self._unsigned, []
        bodies = [body for _, body, _ in batch]
        try:
            answers: list[tuple[bytes, bytes | None] | None] = list(self._tokens.sign_all(bodies))
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers to {len(batch)} requests")
        except Exception:
            log.exception("tsa: answering %d requests failed; answering each alone", len(batch))
            answers = [self._sign_alone(body) for body in bodies]
        if not self._pending:
            self._first_at = time.monotonic()
        for (lane, _, close), answer in zip(batch, answers, strict=True):
            if answer is None:
                lane.reply(None, close=True)
            else:
                self._pending.append((lane, answer[0], answer[1], close))

    def _sign_alone(self, body: bytes) -> tuple[bytes, bytes | None] | None:
        """One request's answer, or None: it fails (the connection gets a 500)."""
        assert self._tokens is not None
        try:
            [answer] = self._tokens.sign_all([body])  # ValueError unless exactly one
        except Exception:
            log.exception("tsa: answering failed; closing the connection")
            return None
        return answer

    def _run(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        assert self._tokens is not None  # pending only fills through add()
        records = [record for _, _, record, _ in pending if record is not None]
        if not records:
            self._deliver(pending, True)
            return
        try:
            self._tokens.commit(records, lambda durable: self._deliver(pending, durable))
        except Exception:
            log.exception("tsa: the issuance log failed unexpectedly")
            self._deliver(pending, False)

    def _deliver(
        self, pending: list[tuple[Lane, bytes, bytes | None, bool]], durable: bool
    ) -> None:
        assert self._tokens is not None
        withheld = None if durable else self._tokens.withheld()
        for lane, der, record, close in pending:
            lane.reply(der if durable or record is None else withheld, close)
