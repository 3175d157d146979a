"""The appliance's vitals, for the service manager (``horodate.sd_notify``): is it serving
yet, is it healthy, and its one-line verdict.

- *Ready* once it listens (the caller asks only then) and its sources have been read: every
  configured source has given a sample or a reason it gives none (a port not open, a
  server not answering) — or ``READY_DEADLINE_S`` has passed, so that a receiver that stays
  silent does not hold the start up until systemd's own timeout kills it.
- *Healthy* while every TSA worker process and every driver thread runs, each driver loop
  coming round (not stuck in a call for ``DRIVER_STALL_S``). The event loop's health is
  that the check is asked at all: it runs on the loop.
- The *status* is the clock's verdict and bound: ``issuing, bound 6.0 ms``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final, Protocol

from aiohttp import web

from appliance.clock import ClockState
from appliance.http.app_keys import TIMEKEEPER, TSA, tsa_tally
from appliance.runtime.driver_threads import Appliance
from drivers.monotonic import NS_PER_S

READY_DEADLINE_S: Final = 30.0  # well inside systemd's TimeoutStartSec (90 s by default)

APPLIANCE = web.AppKey("appliance", Appliance)


class Pool(Protocol):
    """What the vitals need of the TSA worker processes (``workers.WorkerPool``)."""

    @property
    def size(self) -> int: ...

    def dead(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Vitals:
    ready: bool
    healthy: bool
    status: str


class ApplianceVitals:
    """Asked on the event loop, from the moment the appliance listens."""

    def __init__(self, app: web.Application, pool: Pool | None) -> None:
        self._app = app
        self._pool = pool
        self._since = time.monotonic()
        self._sources_read = False

    def __call__(self) -> Vitals:
        timekeeper = self._app[TIMEKEEPER]
        assessment = timekeeper.assess()
        appliance = self._app.get(APPLIANCE)
        problems = []
        if self._pool is not None:
            problems += [f"worker {w} not running" for w in self._pool.dead()]
        if appliance is not None:
            problems += [f"thread {t} ended" for t in appliance.dead_threads()]
            problems += [f"thread {t}" for t in appliance.stalled_threads()]
        verdict = verdict_line(
            assessment.state, assessment.issuing, assessment.bound_ns, assessment.reason
        )
        if TSA in self._app and (stopped := tsa_tally(self._app).logs_stopped):
            verdict = f"refusing: {stopped} issuance log(s) stopped after a failed fsync"
        if self._pool is not None:
            verdict += f", {self._pool.size - len(self._pool.dead())}/{self._pool.size} workers"
        if not self._sources_read:
            waiting: set[str] = set()
            if appliance is not None:
                heard = {s.name for s in assessment.sources} | set(timekeeper.driver_notes())
                waiting = appliance.source_names() - heard
            late = time.monotonic() - self._since >= READY_DEADLINE_S
            self._sources_read = not waiting or late
            if not self._sources_read:
                verdict = f"starting: reading {', '.join(sorted(waiting))}"
        if problems:
            verdict = f"NOT HEALTHY: {'; '.join(problems)} | {verdict}"
        return Vitals(ready=self._sources_read, healthy=not problems, status=verdict)


def verdict_line(state: ClockState, issuing: bool, bound_ns: int | None, reason: str) -> str:
    """``issuing, bound 6.0 ms``; ``issuing in holdover, bound 80.0 ms``; ``refusing
    (unsynchronised): no quorum …``."""
    if issuing:
        how = "issuing" if state is ClockState.SYNCHRONISED else f"issuing in {state.value}"
        return how if bound_ns is None else f"{how}, bound {bound_text(bound_ns)}"
    return f"refusing ({state.value}): {reason}" if reason else f"refusing ({state.value})"


def bound_text(bound_ns: int) -> str:
    if bound_ns < NS_PER_S // 1000:
        return f"{bound_ns / 1000:.0f} µs"
    if bound_ns < 10 * NS_PER_S // 1000:
        return f"{bound_ns / 1e6:.1f} ms"
    if bound_ns < NS_PER_S:
        return f"{bound_ns / 1e6:.0f} ms"
    return f"{bound_ns / NS_PER_S:.2f} s"
