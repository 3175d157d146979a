"""Telling systemd how a daemon is doing: the sd_notify(3) protocol, and the task that
speaks it for ``horodate appliance``, ``horodate vault`` and ``horodate witness``.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace): ``READY=1`` once the
daemon serves, ``STATUS=…`` a line for ``systemctl status``, ``WATCHDOG=1`` to keep
``WatchdogSec=`` from killing it, ``STOPPING=1`` when it stops. Without ``$NOTIFY_SOCKET``
(not started by systemd with ``Type=notify``) nothing is sent.

Written by hand rather than taken from a library, on purpose: neither the ``systemd``
Python binding (Debian's python3-systemd, a C extension linked to libsystemd, which a venv
built by ``make venv`` does not see) nor PyPI's ``sdnotify`` (one small module that sends
the datagram and no more) is a dependency of Horodate; the datagram is these few lines
(sd_notify(3)), and what matters beyond it — the watchdog period from ``$WATCHDOG_USEC`` and
``$WATCHDOG_PID``, pinging only when the daemon's own check passes — would be ours anyway.

What each daemon reports comes from a *check* it supplies (its vitals:
``appliance.runtime.vitals``, ``daemon.vitals``): :func:`supervised` asks it on the event
loop every half of ``$WATCHDOG_USEC`` (sd_watchdog_enabled(3)) and pings the watchdog only
while the check says the daemon is healthy — a blocked event loop asks nothing, so it
pings nothing either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol

log = logging.getLogger(__name__)

STATUS_INTERVAL_S: Final = 5.0  # without a watchdog: how often the status line is refreshed
STARTING_POLL_S: Final = 0.1  # until the check says ready: READY=1 is not left waiting
STATUS_MAX_CHARS: Final = 200  # one line for `systemctl status`, not a report


class Vitals(Protocol):
    """What a daemon's check answers (each daemon has its own frozen dataclass)."""

    @property
    def ready(self) -> bool: ...  # serving: READY=1 may be sent
    @property
    def healthy(self) -> bool: ...  # event loop and workers alive: WATCHDOG=1 may be sent
    @property
    def status(self) -> str: ...  # the one-line verdict


@dataclass(frozen=True, slots=True)
class LoopVitals:
    """The vitals of a daemon whose only worker is its event loop (the witness)."""

    status: str
    ready: bool = True
    healthy: bool = True


Check = Callable[[], Vitals]
Supervise = Callable[[Check], AbstractAsyncContextManager[None]]


class Notifier:
    """Datagrams to the service manager's notification socket; never raises on send."""

    def __init__(self, address: str) -> None:
        # sd_notify(3): a leading "@" names the Linux abstract namespace (a NUL byte).
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._failing = False

    def notify(self, fields: Mapping[str, str]) -> bool:
        """Send ``fields`` as one datagram of ``KEY=VALUE`` lines; False if it failed."""
        message = "".join(f"{key}={_one_line(value)}\n" for key, value in fields.items())
        try:
            self._sock.sendto(message.encode(), self.address)
        except OSError as e:
            if not self._failing:  # one line, not one per watchdog period
                log.warning("cannot notify systemd on %r: %s", os.environ.get("NOTIFY_SOCKET"), e)
            self._failing = True
            return False
        self._failing = False
        return True

    def close(self) -> None:
        self._sock.close()


def _one_line(value: str) -> str:
    text = " ".join(value.split())
    return text if len(text) <= STATUS_MAX_CHARS else text[: STATUS_MAX_CHARS - 1] + "…"


def watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """Half of ``$WATCHDOG_USEC`` when the watchdog is this process's (sd_watchdog_enabled(3):
    ``$WATCHDOG_PID``, when set, must be ours); None without a watchdog."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000


def supervisor_from_environment(env: Mapping[str, str] | None = None) -> Supervise | None:
    """The supervision to run around serving, or None when not under systemd."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):  # unset, or a kind we do not speak (vsock:…)
        if address:
            log.warning("NOTIFY_SOCKET=%r: not an AF_UNIX socket; not notifying", address)
        return None
    interval_s = watchdog_interval_s(env)

    def supervise(check: Check) -> AbstractAsyncContextManager[None]:
        return supervised(Notifier(address), check, watchdog_s=interval_s)

    return supervise


async def serve_until(stop: asyncio.Event, check: Check) -> None:
    """Wait for ``stop``, under systemd's supervision when it runs us (else just wait):
    for a daemon that already serves, READY=1 at once."""
    supervise = supervisor_from_environment()
    if supervise is None:
        await stop.wait()
        return
    async with supervise(check):
        await stop.wait()


@asynccontextmanager
async def supervised(
    notifier: Notifier, check: Check, *, watchdog_s: float | None
) -> AsyncIterator[None]:
    """READY=1, STATUS= and WATCHDOG=1 from ``check`` while the context lasts; STOPPING=1
    when it ends."""
    task = asyncio.create_task(_speak(notifier, check, watchdog_s), name="sd-notify")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        notifier.notify({"STOPPING": "1", "STATUS": "stopping"})
        notifier.close()


async def _speak(notifier: Notifier, check: Check, watchdog_s: float | None) -> None:
    ready = False
    status = ""
    unhealthy = False
    while True:
        try:
            vitals = check()
        except Exception as e:  # a bug in a check: no ping, and say so once
            if not unhealthy:
                log.exception("the health check for systemd's watchdog failed")
            unhealthy = True
            fields = {"STATUS": f"health check failed: {e}"}
        else:
            fields = {}
            if vitals.status != status:
                status = fields["STATUS"] = vitals.status
            if vitals.ready and not ready:
                ready = True
                fields["READY"] = "1"
            if vitals.healthy and watchdog_s is not None:
                fields["WATCHDOG"] = "1"
            if vitals.healthy == unhealthy:
                unhealthy = not vitals.healthy
                (log.info if vitals.healthy else log.error)(
                    "%s: %s", "healthy again" if vitals.healthy else "not healthy", vitals.status
                )
        if fields:
            notifier.notify(fields)
        period = watchdog_s if watchdog_s is not None else STATUS_INTERVAL_S
        await asyncio.sleep(period if ready else min(period, STARTING_POLL_S))
