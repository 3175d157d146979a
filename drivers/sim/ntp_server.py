"""A simulated NTPv4 server on a loopback UDP port, whose truth is the host's real clock.

It answers the real NTP driver through real UDP packets. Faults come from a callable the
simulated world owns, read at every request:

- ``offset_s`` / ``drift_ppm``: added to the time it serves (the drift accumulating from the
  instant the fault set was installed);
- ``unsynchronised``: answers as real chronyd does without a reference (checked against
  chronyd 4.3 in the tests): LI=3, stratum 0, reference id 0, root delay and root
  dispersion 1 s, no reference timestamp;
- ``kod``: every reply is a Kiss-o'-Death (RFC 5905 §7.4): LI=3, stratum 0, the code in
  the reference id;
- ``silent``: no reply at all.

Healthy, it is a stratum-1 server with reference id ``GPS``, as a GPS-disciplined
appliance would be. Requests are parsed defensively: anything that is not a client-mode
NTP request of versions 1-4 is dropped and counted, never answered, never fatal.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from drivers.errors import DriverError
from drivers.monotonic import NS_PER_S, mono_ns, realtime_ns
from drivers.ntp import (
    MAX_DATAGRAM_BYTES,
    MODE_CLIENT,
    MODE_SERVER,
    PACKET_BYTES,
    NtpPacket,
    encode_packet,
    ns_to_ntp64,
    ns_to_ntp_short,
)
from drivers.sim.faults import NtpFaults
from drivers.sim.lifecycle import StartStop

log = logging.getLogger(__name__)

STOP_POLL_S = 0.05  # how often the serving loop checks for stop()
STOP_JOIN_S = 2.0  # how long stop() waits for the thread
PRECISION_LOG2 = -20  # about 1 µs, the resolution of a Python clock read
HEALTHY_ROOT_DISPERSION_NS = 50_000  # 50 µs: a GPS-disciplined stratum 1 in good health
REFERENCE_UPDATE_NS = 16 * NS_PER_S  # the reference timestamp lags by up to one 16 s poll
GPS_REFID = int.from_bytes(b"GPS\0", "big")


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """The fields of a client request that a reply depends on."""

    version: int
    poll: int
    transmit_ts: int  # echoed verbatim as the reply's origin timestamp (RFC 5905 §8)


def parse_request(data: bytes) -> ClientRequest | None:
    """A client-mode request (RFC 5905 §7.3), or None for anything else. Never raises."""
    if len(data) < PACKET_BYTES:
        return None
    first = data[0]
    version, mode = (first >> 3) & 0x7, first & 0x7
    if mode != MODE_CLIENT or not 1 <= version <= 4:
        return None
    poll = int.from_bytes(data[2:3], "big", signed=True)
    return ClientRequest(version=version, poll=poll, transmit_ts=int.from_bytes(data[40:48], "big"))


def build_reply(
    request: ClientRequest, faults: NtpFaults, *, receive_ns: int, transmit_ns: int
) -> bytes | None:
    """The reply to ``request`` under ``faults`` (pure), or None to stay silent.

    ``receive_ns`` and ``transmit_ns`` are the times to serve (truth plus the fault's
    offset) at reception and at transmission, POSIX nanoseconds.
    """
    if faults.silent:
        return None
    common = {
        "version": request.version,
        "mode": MODE_SERVER,
        "poll": request.poll,
        "precision": PRECISION_LOG2,
        "origin_ts": request.transmit_ts,
        "receive_ts": ns_to_ntp64(receive_ns),
        "transmit_ts": ns_to_ntp64(transmit_ns),
    }
    if faults.kod is not None:
        # RFC 5905 §7.4: stratum 0, the kiss code as ASCII in the reference id.
        return encode_packet(
            NtpPacket(
                leap_indicator=3,
                stratum=0,
                reference_id=int.from_bytes(faults.kod.encode("ascii")[:4], "big"),
                **common,
            )
        )
    if faults.unsynchronised:
        return encode_packet(
            NtpPacket(
                leap_indicator=3,
                stratum=0,
                reference_id=0,
                root_delay=ns_to_ntp_short(NS_PER_S),
                root_dispersion=ns_to_ntp_short(NS_PER_S),
                reference_ts=0,
                **common,
            )
        )
    return encode_packet(
        NtpPacket(
            leap_indicator=0,
            stratum=1,
            reference_id=GPS_REFID,
            root_delay=0,
            root_dispersion=ns_to_ntp_short(HEALTHY_ROOT_DISPERSION_NS),
            reference_ts=ns_to_ntp64(receive_ns - receive_ns % REFERENCE_UPDATE_NS),
            **common,
        )
    )


class SimNtpServer(StartStop):
    """A real UDP NTP server on loopback, serving the host's clock plus injected faults.

    ``faults()`` returns the current :class:`NtpFaults` and the raw-monotonic instant they
    were installed (drift accumulates from then). Use as a context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        faults: Callable[[], tuple[NtpFaults, int]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._faults = faults
        self._host = host
        self._port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._counts_lock = threading.Lock()
        self.requests = 0  # well-formed client requests received
        self.replies = 0  # replies sent (Kiss-o'-Death included)
        self.ignored = 0  # datagrams that were not client requests

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on; the port is known once started."""
        if self._sock is None:
            raise DriverError("the simulated NTP server is not started")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        if self._thread is not None:
            raise DriverError("the simulated NTP server is already started")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self._host, self._port))
        except OSError as e:
            sock.close()
            raise DriverError(f"cannot bind the simulated NTP server: {e}") from e
        sock.settimeout(STOP_POLL_S)
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"sim-ntp-{self.address[1]}", daemon=True
        )
        self._thread.start()
        log.info("simulated NTP server listening on %s:%d", *self.address)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_JOIN_S)
            if self._thread.is_alive():
                log.error("simulated NTP server thread did not stop within %s s", STOP_JOIN_S)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(MAX_DATAGRAM_BYTES)
            except TimeoutError:
                continue
            except OSError as e:
                if not self._stop.is_set():
                    log.warning("simulated NTP server: receive failed: %s", e)
                    self._stop.wait(STOP_POLL_S)  # don't spin on a persistent error
                continue
            receive_real, receive_mono = realtime_ns(), mono_ns()
            try:
                reply = self._answer(data, receive_real, receive_mono)
                if reply is not None:
                    sock.sendto(reply, peer)
                    with self._counts_lock:
                        self.replies += 1
            except Exception:  # the server must outlive any single bad request
                log.exception("simulated NTP server: failed to answer %s", peer)

    def _answer(self, data: bytes, receive_real: int, receive_mono: int) -> bytes | None:
        request = parse_request(data)
        if request is None:
            with self._counts_lock:
                self.ignored += 1
            return None
        with self._counts_lock:
            self.requests += 1
        faults, since_mono = self._faults()
        offset_ns = round(faults.offset_at(receive_mono - since_mono) * NS_PER_S)
        return build_reply(
            request,
            faults,
            receive_ns=receive_real + offset_ns,
            transmit_ns=realtime_ns() + offset_ns,
        )
