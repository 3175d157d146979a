"""One simulated world: a GPS on a pty, an NTP server on loopback UDP, a DS3231 on an I2C bus.

Truth is the host's real clock. Each simulated part serves it, plus the faults the world
currently holds for that part. The real drivers read the world through their production
paths: pyserial opens :attr:`SimWorld.gps_device`, the NTP client sends UDP packets to
:attr:`SimWorld.ntp_address`, the adafruit DS3231 driver reads registers over
:attr:`SimWorld.i2c_bus`. See ``docs/simulator.md``.

Faults are swapped atomically as a whole :class:`~drivers.sim.faults.Faults` set (the
appliance's ``POST /sim/faults`` replaces it, ``DELETE`` clears it). For each source the
world records the ``CLOCK_MONOTONIC_RAW`` instant its faults last changed (for the GPS and
NTP: its ``offset_s`` or ``drift_ppm``); a source's ``drift_ppm`` accumulates from that
instant, and a source whose clock error did not change keeps its instant (its drift keeps
accumulating).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from drivers.errors import DriverError
from drivers.monotonic import mono_ns
from drivers.sim.ds3231 import SimDS3231, SimI2CBus
from drivers.sim.faults import FaultError, Faults, GpsFaults, NtpFaults, RtcFaults
from drivers.sim.gps import SimGps
from drivers.sim.lifecycle import StartStop
from drivers.sim.ntp_server import SimNtpServer

log = logging.getLogger(__name__)

RTC_I2C_ADDRESS = 0x68  # DS3231 datasheet: slave address 1101000b
FAULTS_JSON_MAX_BYTES = 64 * 1024  # a fault set is a few hundred bytes; refuse floods


@dataclass(frozen=True, slots=True)
class _FaultState:
    """The fault set and, per source, the mono_ns instant its faults last changed."""

    faults: Faults
    gps_set_ns: int
    ntp_set_ns: int
    rtc_set_ns: int


class SimWorld(StartStop):
    """The simulated hardware the appliance runs on with ``--simulate``; thread-safe.

    ``gps_*`` settings go to :class:`~drivers.sim.gps.SimGps` (``gps_latency_s`` is the
    receiver's output latency, ``gps_jitter_s`` its spread); ``ntp_host``/``ntp_port`` are
    where the NTP server binds (port 0: any free port). ``seed`` makes the GPS's jitter and
    garbage reproducible.
    """

    def __init__(
        self,
        *,
        faults: Faults | None = None,
        gps_latency_s: float = 0.25,
        gps_jitter_s: float = 0.05,
        gps_baud: int | None = 9600,
        gps_talker: str = "GP",
        ntp_host: str = "127.0.0.1",
        ntp_port: int = 0,
        seed: int | None = None,
    ) -> None:
        initial = faults if faults is not None else Faults()
        if not isinstance(initial, Faults):
            raise FaultError(f"expected a Faults set, got {type(initial).__name__}")
        now = mono_ns()
        self._lock = threading.Lock()
        self._state = _FaultState(initial, now, now, now)
        self._started = False
        self._stopped = False
        self._gps = SimGps(
            self._gps_faults,
            latency_s=gps_latency_s,
            jitter_s=gps_jitter_s,
            baud=gps_baud,
            talker=gps_talker,
            seed=seed,
        )
        self._ntp = SimNtpServer(self._ntp_faults, host=ntp_host, port=ntp_port)
        self._rtc = SimDS3231(faults=self._rtc_faults)
        self._bus = SimI2CBus({RTC_I2C_ADDRESS: self._rtc})
        if initial != Faults():
            log.info("sim: faults now %s", _dumps(initial))

    # -- what the parts poll ----------------------------------------------------------------

    def _gps_faults(self) -> tuple[GpsFaults, int]:
        state = self._state  # one attribute read: always a consistent pair
        return state.faults.gps, state.gps_set_ns

    def _ntp_faults(self) -> tuple[NtpFaults, int]:
        state = self._state
        return state.faults.ntp, state.ntp_set_ns

    def _rtc_faults(self) -> tuple[RtcFaults, int]:
        state = self._state
        return state.faults.rtc, state.rtc_set_ns

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the GPS's writer thread and bind the NTP server (the RTC needs no thread)."""
        with self._lock:
            if self._stopped:
                raise DriverError("sim: this world was stopped; make a new one")
            if self._started:
                return
            self._gps.start()
            try:
                self._ntp.start()
            except DriverError:
                self._gps.stop()
                self._stopped = True
                raise
            self._started = True
        host, port = self._ntp.address
        log.info(
            "sim: world started: GPS on %s, NTP on %s:%d, DS3231 at I2C 0x%02X",
            self._gps.device,
            host,
            port,
            RTC_I2C_ADDRESS,
        )

    def stop(self) -> None:
        """Stop every part (each joins its thread within its own deadline); idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._ntp.stop()
            finally:
                self._gps.stop()
        log.info("sim: world stopped")

    # -- where the drivers find the parts -----------------------------------------------------

    @property
    def gps_device(self) -> str:
        """The serial device path to open (a stable symlink to the current pty)."""
        return self._gps.device

    @property
    def ntp_address(self) -> tuple[str, int]:
        """(host, port) of the NTP server; known once started."""
        return self._ntp.address

    @property
    def i2c_bus(self) -> SimI2CBus:
        """The ``busio.I2C``-like bus with the DS3231 at 0x68."""
        return self._bus

    @property
    def gps(self) -> SimGps:
        """The receiver itself (``unplug()``/``replug()``, ``emit_once()``, ``stats``)."""
        return self._gps

    @property
    def ntp(self) -> SimNtpServer:
        return self._ntp

    @property
    def rtc(self) -> SimDS3231:
        return self._rtc

    # -- faults -------------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The current fault set (``Faults()`` when healthy)."""
        return self._state.faults

    @property
    def faults_set_mono_ns(self) -> dict[str, int]:
        """Per source, the ``CLOCK_MONOTONIC_RAW`` instant its drift accumulates from."""
        state = self._state
        return {"gps": state.gps_set_ns, "ntp": state.ntp_set_ns, "rtc": state.rtc_set_ns}

    def set_faults(self, faults: Faults) -> None:
        """Replace the whole fault set at once.

        A GPS or NTP source whose clock error (``offset_s``, ``drift_ppm``) changes restarts
        its drift from now; one whose clock error is unchanged keeps accumulating (so
        toggling ``fix`` or ``unsynchronised`` does not snap a drifting source back). The
        RTC's instant moves on any change of its faults.
        """
        if not isinstance(faults, Faults):
            raise FaultError(f"expected a Faults set, got {type(faults).__name__}")
        with self._lock:
            old = self._state
            now = mono_ns()
            self._state = _FaultState(
                faults,
                old.gps_set_ns if _same_clock(faults.gps, old.faults.gps) else now,
                old.ntp_set_ns if _same_clock(faults.ntp, old.faults.ntp) else now,
                # The DS3231 model applies every change (a power loss, a step) as an event
                # at this instant and keeps the time its drift gained, so any change counts.
                old.rtc_set_ns if faults.rtc == old.faults.rtc else now,
            )
        if faults != old.faults:
            log.info("sim: faults now %s", _dumps(faults))

    def clear_faults(self) -> None:
        """Back to a healthy world (``DELETE /sim/faults``)."""
        self.set_faults(Faults())

    def faults_json(self) -> dict[str, Any]:
        """The current fault set as JSON data (``GET /sim/faults``): only non-default fields,
        e.g. ``{"gps": {"offset_s": 5.0}, "ntp": {}, "rtc": {}}``."""
        return self.faults.to_json()

    def set_faults_json(self, data: str | bytes | dict[str, Any]) -> Faults:
        """Replace the whole fault set from JSON text or parsed JSON (``POST /sim/faults``).

        Raises :class:`FaultError` (and changes nothing) for malformed JSON, unknown keys,
        values of the wrong type or out of range. Returns the set now in force.
        """
        if isinstance(data, str | bytes | bytearray):
            if len(data) > FAULTS_JSON_MAX_BYTES:
                raise FaultError(f"fault set larger than {FAULTS_JSON_MAX_BYTES} bytes")
            try:
                data = json.loads(data)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise FaultError(f"not JSON: {e}") from e
        faults = Faults.from_json(data)
        self.set_faults(faults)
        return faults


def _same_clock(new: GpsFaults | NtpFaults, old: GpsFaults | NtpFaults) -> bool:
    """Whether the source's clock error (step and drift) is unchanged."""
    return (new.offset_s, new.drift_ppm) == (old.offset_s, old.drift_ppm)


def _dumps(faults: Faults) -> str:
    """Compact, stable text of the non-default faults, for the log."""
    sparse = {k: v for k, v in faults.to_json().items() if v}
    return json.dumps(sparse, sort_keys=True) if sparse else "{} (healthy)"
