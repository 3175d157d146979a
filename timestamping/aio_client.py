"""RFC 3161 over HTTP (§3.4) with aiohttp: persistent connections to one or more TSAs.

The vault seals every entry with a token from the appliance, on the append's path: the
client keeps its connections open (one ``aiohttp.ClientSession``, a bounded pool), gives
every attempt a deadline, retries an unreachable TSA with exponential back-off, and moves
on to the next configured TSA when one is down. A TSA that *answers* a refusal
(``timeNotAvailable``: its clock cannot prove the time) or a token that does not verify is
not retried, but the next TSA is asked: with one appliance per site, the outage of one
costs no seal. When every TSA failed, the caller decides (the vault keeps the entry
pending and its sealer tries again later).

Every token is checked before it is handed back: it answers this request (imprint, nonce,
the certificate asked for: RFC 3161 §2.4.2) and it verifies against *that TSA's* roots
(signature, chain at genTime, the critical timeStamping EKU) — a token that does not is
never stored. Each TSA may have roots of its own (one PKI per site): a token from one site
is not accepted because it chains to the other's CA.

Parsing and verifying a token costs milliseconds of CPU (benchmarks/RESULTS.md); with
``ClientPolicy.verify_processes`` it runs in that many processes beside the event loop,
which meanwhile serves other requests.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Final

import aiohttp

from timestamping.errors import TimestampingError, TsaUnreachable
from timestamping.http_client import QUERY_CONTENT_TYPE, REPLY_CONTENT_TYPE
from timestamping.reply import MAX_REPLY_BYTES, TokenInfo
from timestamping.request import Digest, TimeStampQuery, build_request, random_nonce
from timestamping.verify import VerifiedToken, accept_reply

_BACKOFF_CAP_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class Seal:
    """A verified token for one imprint: the ``TimeStampResp`` DER, its TSTInfo, who sealed."""

    reply_der: bytes
    info: TokenInfo
    tsa_url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientPolicy:
    """Deadlines and retries of :class:`AsyncTsaClient` (seconds, counts)."""

    attempt_timeout_s: float = 5.0  # one HTTP exchange
    attempts_per_tsa: int = 3  # an unreachable TSA is retried this many times in all
    backoff_first_s: float = 0.05  # then doubled, with jitter, capped at 2 s
    connections: int = 64  # the pool's size, all TSAs together
    verify_processes: int = 0  # 0: verify tokens on the event loop; N: in N processes


class AsyncTsaClient:
    """Ask one of ``urls`` for a token over ``imprint`` (SHA-256), verified against its roots.

    ``ca_pem`` is the roots of every TSA (one PEM), or one PEM per URL, in the same order.
    Use as ``async with AsyncTsaClient(urls, ca_pem) as tsa: seal = await tsa.seal(h)``.
    """

    def __init__(
        self,
        urls: Sequence[str],
        ca_pem: bytes | Sequence[bytes],
        *,
        policy: ClientPolicy | None = None,
    ) -> None:
        if not urls:
            raise TimestampingError("no TSA configured")
        self.urls = tuple(urls)
        roots = [ca_pem] * len(self.urls) if isinstance(ca_pem, bytes) else list(ca_pem)
        if len(roots) != len(self.urls):
            raise TimestampingError(
                f"{len(self.urls)} TSAs and {len(roots)} sets of roots: give one PEM for "
                "all, or one per TSA"
            )
        self.roots = dict(zip(self.urls, roots, strict=True))
        self.policy = policy or ClientPolicy()
        self._session: aiohttp.ClientSession | None = None
        self._verifiers: ProcessPoolExecutor | None = None
        self._preferred = 0  # the TSA that answered last: tried first next time

    async def __aenter__(self) -> AsyncTsaClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.policy.connections, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=self.policy.attempt_timeout_s),
        )
        if self.policy.verify_processes > 0:
            await self._start_verifiers()
        return self

    async def _start_verifiers(self) -> None:
        # spawn, not fork: the caller has threads (the vault's committer) by now.
        n = self.policy.verify_processes
        self._verifiers = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
        # Start them now (imports and all), not on the first token's deadline.
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._verifiers, _warm_up) for _ in range(n)))

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._verifiers is not None:
            self._verifiers.shutdown(wait=True, cancel_futures=True)
            self._verifiers = None

    async def seal(self, imprint: bytes) -> Seal:
        """A verified token over ``imprint``.

        The TSA that answered last is asked first; each of the others in turn when it is
        unreachable, refuses or sends a token that does not verify. When none gave a token:
        :class:`TsaUnreachable` if none answered at all, else the last TSA's refusal
        (:class:`ReplyRejected`, its PKIStatus and failInfo in the exception) or
        :class:`VerificationFailed`, every TSA's reason in its message when there are several.
        """
        query = build_request(imprint, digest=Digest.SHA256, nonce=random_nonce(), cert_req=True)
        order = self.urls[self._preferred :] + self.urls[: self._preferred]
        failures: list[TimestampingError] = []
        for url in order:
            try:
                der = await self._post(url, query.der)
                verified = await self._accept(query, der, self.roots[url])
            except TimestampingError as e:
                failures.append(e)
                continue
            self._preferred = self.urls.index(url)
            return Seal(reply_der=der, info=verified.info, tsa_url=url)
        raise _all_failed(order, failures)

    async def _accept(self, query: TimeStampQuery, der: bytes, ca_pem: bytes) -> VerifiedToken:
        """:func:`accept_reply`, here or in a verifying process."""
        if self._verifiers is None:
            return accept_reply(query, der, ca_pem=ca_pem)
        job = functools.partial(accept_reply, query, der, ca_pem=ca_pem)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._verifiers, job)
        except BrokenProcessPool as e:  # a verifier died (OOM killer…): new ones, this seal later
            self._verifiers.shutdown(wait=False, cancel_futures=True)
            await self._start_verifiers()
            raise TimestampingError(f"a token-verifying process died ({e}); started anew") from e

    async def _post(self, url: str, query_der: bytes) -> bytes:
        """One TSA, with retries and back-off; the reply's DER."""
        if self._session is None:
            raise TimestampingError("AsyncTsaClient used outside 'async with'")
        delay = self.policy.backoff_first_s
        last = ""
        for attempt in range(self.policy.attempts_per_tsa):
            if attempt:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _BACKOFF_CAP_S)
            session = self._session
            if session is None or session.closed:  # its owner closed it (stopping)
                raise TsaUnreachable(f"the TSA client is closed; nothing sent to {url}")
            try:
                async with session.post(
                    url,
                    data=query_der,
                    headers={"Content-Type": QUERY_CONTENT_TYPE, "Accept": REPLY_CONTENT_TYPE},
                ) as resp:
                    if resp.status != 200:
                        last = f"{url} answered HTTP {resp.status} {resp.reason}"
                        continue
                    if resp.content_type != REPLY_CONTENT_TYPE:
                        last = f"{url} did not answer with a time-stamp reply ({resp.content_type})"
                        continue
                    body = await resp.content.read(MAX_REPLY_BYTES + 1)
                    if len(body) > MAX_REPLY_BYTES:
                        last = f"the reply from {url} exceeds {MAX_REPLY_BYTES} bytes"
                        continue
                    return body
            except TimeoutError:
                last = f"the TSA at {url} did not answer within {self.policy.attempt_timeout_s} s"
            except aiohttp.ClientError as e:
                last = f"cannot reach the TSA at {url}: {e}"
        raise TsaUnreachable(last)


def _all_failed(urls: Sequence[str], failures: list[TimestampingError]) -> TimestampingError:
    """What :meth:`AsyncTsaClient.seal` raises when no TSA gave a token.

    One TSA: its error. Several: :class:`TsaUnreachable` if none answered; else the last
    answer's error (a refusal is not "unreachable": the vault counts them apart), its
    message replaced by every TSA's reason.
    """
    if len(failures) == 1:
        return failures[0]
    said = "; ".join(
        str(e) if isinstance(e, TsaUnreachable) else f"{url} {e}"
        for url, e in zip(urls, failures, strict=True)
    )
    answered = [e for e in failures if not isinstance(e, TsaUnreachable)]
    if not answered:
        return TsaUnreachable(said)
    answered[-1].args = (f"no TSA gave a token: {said}",)
    return answered[-1]


def _warm_up() -> None:
    """Run first in each verifying process: loads what verifying a token needs."""
    import rfc3161_client  # noqa: F401 - the import is the point
    from asn1crypto import cms, tsp  # noqa: F401
