"""The issuer: what answers a time-stamp request, from the clock's time, a serial and the
engine to a token whose issuance-log record is durable before it leaves.

One :class:`TsaService` per process; the fast lane, the aiohttp route and the worker
processes all answer through it. :class:`TsaTally` is what it counts, for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from appliance.issuance.log import IssuanceLog, encode_issued
from appliance.issuance.serials import SerialAllocator
from appliance.tsa.credentials import TsaCredentials, days_to_expiry, expiry_warning
from appliance.tsa.engine import Reply, TimeStampAuthority
from appliance.tsa.errors import FailInfo

log = logging.getLogger(__name__)


@dataclass
class TsaService:
    """What ``POST /tsa`` needs: the engine, serials, the issuance log, the chain PEM."""

    authority: TimeStampAuthority
    serials: SerialAllocator
    issuance_log: IssuanceLog | None  # None: no log (tests only)
    chain_pem: bytes = b""
    days_to_expiry: Callable[[], float] | None = None
    # The clock's time for the expiry countdown and warning (the ensemble's when it can
    # say, the host's otherwise); the engine itself refuses every token outside the
    # certificates' validity on the genTime it is about to sign.
    clock_now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    granted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by PKIFailureInfo name
    # The time of each token: (utc_ns, bound_ns) or the TSA's TimeNotAvailable.
    token_time: Callable[[], tuple[int, int]] | None = None
    issue_state: Callable[[], str] = str  # the clock's state behind the last token_time
    # Reads the key and certificate again, checked as at start (``load_credentials`` on
    # the files the service started with); raises CredentialsError.
    load_credentials: Callable[[], TsaCredentials] | None = None
    reloads: Counter[str] = field(default_factory=Counter)  # "done" / "refused"
    credentials: TsaCredentials | None = None  # in use (see adopt)

    def adopt(self, creds: TsaCredentials) -> None:
        """Sign with ``creds`` from the next token on: the engine's key and certificate,
        the chain ``/tsa/certs`` serves, the expiry the metrics show and the instant signing
        stops. At start, and at each :meth:`reload`."""
        authority = self.authority
        if authority.credentials is not creds:
            authority = authority.with_credentials(creds)
        chain_pem = creds.chain_pem()
        # all computed: now swap, with no await between (one step for the event loop)
        self.authority, self.credentials, self.chain_pem = authority, creds, chain_pem
        self.days_to_expiry = lambda: days_to_expiry(creds, self.clock_now())

    def reload(self) -> bool:
        """Read the key and certificate again (SIGHUP: a renewed certificate, a new key).
        If they pass the checks made at start, every token from the next on is signed with
        them, and the clock, serial numbers and issuance log carry on untouched; if not, the
        ones in use stay and the error is logged. Never raises."""
        if self.load_credentials is None:
            log.warning("tsa: reload asked, but this service has no key files to read")
            return False
        try:
            creds = self.load_credentials()
            self.adopt(creds)
        except Exception as e:  # CredentialsError, or a key the engine cannot use
            self.reloads["refused"] += 1
            log.error("tsa: reload refused, still signing with the certificate in use: %s", e)
            return False
        self.reloads["done"] += 1  # (load_credentials has logged any expiry warning)
        cert = creds.certificate
        log.info(
            "tsa: key and certificate reloaded: %s, certificate serial %#x, valid until %s",
            cert.subject.rfc4514_string(),
            cert.serial_number,
            cert.not_valid_after_utc.isoformat(),
        )
        return True

    def warn_if_expiring(self) -> str | None:
        """Log (and return) the expiry warning while a certificate in use expires within
        ``EXPIRY_WARNING_DAYS`` (each day; loading the files warns too)."""
        if self.credentials is None:
            return None
        warning = expiry_warning(self.credentials, self.clock_now())
        if warning:
            log.warning("tsa: %s", warning)
        return warning

    def sign(self, body: bytes) -> tuple[bytes, bytes | None]:
        """Answer one request now: the ``TimeStampResp`` DER and, for a granted token, its
        issuance-log record (``encode_record``), which must be durable before the token
        leaves (:meth:`commit`). ``None``: nothing to log. Never raises.
        """
        return self.sign_all((body,))[0]

    def sign_all(self, bodies: Sequence[bytes]) -> list[tuple[bytes, bytes | None]]:
        """:meth:`sign` for requests at hand, together: one reading of the clock, the
        signatures back to back (``TimeStampAuthority.respond_all``). Never raises."""
        assert self.token_time is not None, "TsaService.token_time is not wired"
        replies = self.authority.respond_all(bodies, time=self.token_time, serial=self.serials.next)
        state = self.issue_state()  # the clock's, as the replies were timed
        return [self._answer(reply, state) for reply in replies]

    def _answer(self, reply: Reply, state: str) -> tuple[bytes, bytes | None]:
        """The DER to send for ``reply`` (a ``Reply``), and the record to make durable
        first."""
        if not reply.granted:
            self.refused[reply.fail_info.name if reply.fail_info else "rejected"] += 1
            return bytes(reply.der), None
        if self.issuance_log is None:
            self.granted += 1
            return bytes(reply.der), None
        try:
            record = issued_record(reply, state)
        except Exception:  # a bug: the token is withheld, never sent without its record
            log.exception("tsa: cannot record serial %s; withholding the token", reply.serial)
            self.refused[FailInfo.systemFailure.name] += 1
            return self.withheld(), None
        return bytes(reply.der), record

    def commit(self, records: list[bytes], done: Callable[[bool], None]) -> None:
        """Have the records of granted tokens made durable (the issuance log's writer
        groups them); ``done(True)`` in this event loop once they are, ``done(False)`` if
        not: then their tokens must be withheld."""
        assert self.issuance_log is not None

        def settled(durable: bool) -> None:
            if durable:
                self.granted += len(records)
            else:
                log.error("tsa: issuance log failed; withholding %d tokens", len(records))
                self.refused[FailInfo.systemFailure.name] += len(records)
            done(durable)

        try:
            self.issuance_log.submit(records, settled)
        except Exception:
            log.exception("tsa: issuance log unavailable")
            asyncio.get_running_loop().call_soon(settled, False)

    def withheld(self) -> bytes:
        """The answer in place of a token whose record could not be made durable."""
        return bytes(self.authority.reject(FailInfo.systemFailure, "issuance log unavailable"))

    async def answer(self, body: bytes) -> bytes:
        """:meth:`sign`, then :meth:`commit`, awaiting durability without blocking the
        loop (for the aiohttp route; the fast lane calls both itself). Never raises."""
        der, record = self.sign(body)
        if record is None:
            return der
        durable: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.commit([record], durable.set_result)
        return der if await durable else self.withheld()

    def tally(self) -> TsaTally:
        """This process's counts: tokens, refusals and its issuance log."""
        tally = TsaTally(granted=self.granted, refused=Counter(self.refused))
        if self.issuance_log is not None:
            stats = self.issuance_log.stats
            tally.log_records = stats.records
            tally.log_bytes = stats.bytes_written
            tally.log_failures = stats.failures
            tally.logs_stopped = int(stats.stopped)
            tally.log_commit_counts = list(stats.commit_counts)
            tally.log_commit_seconds = stats.commit_seconds
            tally.log_slow_commits = stats.slow_commits
        return tally

    def _refuse(self, fail_info: FailInfo, text: str) -> bytes:
        """A refusal the engine did not make itself (the service's own checks), counted."""
        self.refused[fail_info.name] += 1
        return bytes(self.authority.reject(fail_info, text))


def issued_record(reply: Reply, state: str) -> bytes:
    """The issuance-log record (``encode_record``'s framing) of a granted ``Reply``, the
    clock's ``state`` beside it."""
    serial, gen_ns, accuracy_us = reply.serial, reply.gen_time_ns, reply.accuracy_us
    hash_alg, imprint, token = reply.hash_alg, reply.imprint, reply.token_der
    if (
        serial is None
        or gen_ns is None
        or accuracy_us is None
        or hash_alg is None
        or imprint is None
        or token is None
    ):
        raise ValueError(f"serial {serial}: not a granted reply, nothing to record")
    # the exact token: ECDSA signatures differ each time, so only this one matches
    token_sha256 = hashlib.sha256(token).digest()
    return encode_issued(
        (serial, gen_ns, accuracy_us, hash_alg, imprint, reply.nonce, state, token_sha256)
    )


@dataclass(slots=True)
class TsaTally:
    """What the TSA of one process has counted, or of every process added up."""

    granted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by PKIFailureInfo name
    log_records: int = 0  # issuance-log records made durable
    log_bytes: int = 0
    log_failures: int = 0  # commits that failed: their tokens were withheld
    logs_stopped: int = 0  # issuance logs refusing every record (an fsync failed)
    # successful commits by duration, per bucket (IssuanceLogStats.commit_counts), and in all
    log_commit_counts: list[int] = field(default_factory=list)
    log_commit_seconds: float = 0.0
    log_slow_commits: int = 0

    @property
    def log_commits(self) -> int:
        """Successful commits: write + fdatasync of a group of records."""
        return sum(self.log_commit_counts)

    def add(self, other: TsaTally) -> None:
        self.granted += other.granted
        self.refused.update(other.refused)
        self.log_records += other.log_records
        self.log_bytes += other.log_bytes
        self.log_failures += other.log_failures
        self.logs_stopped += other.logs_stopped
        counts = self.log_commit_counts
        counts += [0] * (len(other.log_commit_counts) - len(counts))
        for i, n in enumerate(other.log_commit_counts):
            counts[i] += n
        self.log_commit_seconds += other.log_commit_seconds
        self.log_slow_commits += other.log_slow_commits
