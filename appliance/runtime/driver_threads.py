"""The running appliance: driver threads feeding the clock, the RTC discipline, the TSA.

Everything blocking (serial reads, NTP round trips, I2C edge timing) runs in its own
daemon thread and hands samples to the :class:`~appliance.clock.timekeeper.Timekeeper`; the
aiohttp server only asks the timekeeper. A driver thread that fails logs why and retries
with a bounded back-off: a source that comes and goes is the ensemble's business, not a
reason for the process to die.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.clock import Policy
from appliance.clock.timekeeper import Timekeeper
from appliance.config import ApplianceConfig, parse_host_port
from drivers.errors import DriverError
from drivers.monotonic import NS_PER_S, mono_ns

if TYPE_CHECKING:
    from appliance.runtime.leds import StatusLights
    from drivers.gps import GpsReceiver
    from drivers.ntp import NtpClient
    from drivers.pps import PpsReceiver
    from drivers.rtc import Ds3231Clock
    from drivers.sim.world import SimWorld
log = logging.getLogger(__name__)


# With --simulate the NTP server is on loopback and ours: poll it briskly so the demo
# reaches a quorum in seconds, not minutes.
SIM_NTP_POLL_INTERVAL_S = 4.0


RTC_READ_INTERVAL_S = 30.0  # each read polls the bus for the seconds edge (up to 1 s)


RTC_DISCIPLINE_CHECK_S = 2.0


THREAD_JOIN_TIMEOUT_S = 3.0


RETRY_BACKOFF_MAX_S = 30.0


# A driver loop comes round at least every RETRY_BACKOFF_MAX_S (its longest wait: a
# back-off) plus one bounded call (a serial read, a PPS fetch, an NTP exchange, an RTC
# edge, each a few seconds at most): one quiet for longer is stuck in a call.
DRIVER_STALL_S = 2 * RETRY_BACKOFF_MAX_S


@dataclass
class Sources:
    """The driver objects the appliance reads (real or simulated)."""

    gps: GpsReceiver | None = None
    ntp: NtpClient | None = None
    rtc: Ds3231Clock | None = None
    pps: PpsReceiver | None = None
    world: SimWorld | None = None  # only with --simulate
    notes: list[str] = field(default_factory=list)
    # Configured sources that could not be set up, by source name: shown in /health.
    unavailable: dict[str, str] = field(default_factory=dict)


def policy_for(config: ApplianceConfig) -> Policy:
    """The clock policy from the configuration, with the leap seconds the host knows."""
    from appliance.clock import ClockError, parse_leap_seconds_list

    leap_seconds: tuple[Any, ...] = ()
    if config.clock.leap_seconds_file:
        path = Path(config.clock.leap_seconds_file)
        try:
            leap_seconds = parse_leap_seconds_list(path.read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError, ClockError) as e:
            log.warning("clock: no leap-second list (%s: %s); relying on NTP's LI bits", path, e)
    return Policy(
        quorum=config.clock.quorum,
        max_error_s=config.clock.max_error_s,
        hidden_faults=config.clock.hidden_faults,
        leap_seconds=leap_seconds,
    )


def build_sources(config: ApplianceConfig) -> Sources:
    """The drivers for this configuration; with ``simulate`` the simulated world's."""
    from drivers.gps import GpsConfig, GpsReceiver
    from drivers.ntp import NtpClient, NtpConfig, NtpServerConfig
    from drivers.rtc import Ds3231Clock, RtcConfig, open_i2c_bus

    sources = Sources()
    gps_overrides: dict[str, Any] = {}
    if config.gps.latency_s is not None:
        gps_overrides["latency_s"] = config.gps.latency_s
    if config.gps.uncertainty_s is not None:
        gps_overrides["uncertainty_s"] = config.gps.uncertainty_s

    if config.simulate:
        from drivers.sim.world import SimWorld

        world = SimWorld()
        world.start()
        sources.world = world
        sources.gps = GpsReceiver(
            GpsConfig(device=world.gps_device, baudrate=9600, **gps_overrides)
        )
        host, port = world.ntp_address
        sources.ntp = NtpClient(
            NtpConfig(
                servers=(NtpServerConfig(host=host, port=port, name="ntp:sim"),),
                poll_interval_s=SIM_NTP_POLL_INTERVAL_S,
                timeout_s=config.ntp.timeout_s,
            )
        )
        sources.rtc = Ds3231Clock(world.i2c_bus, RtcConfig(i2c_address=config.rtc.address))
        sources.notes.append(
            f"simulated hardware: GPS on {world.gps_device}, NTP on {host}:{port}, "
            "DS3231 on a simulated I2C bus"
        )
        return sources

    if config.gps.device:
        sources.gps = GpsReceiver(
            GpsConfig(device=config.gps.device, baudrate=config.gps.baudrate, **gps_overrides)
        )
    if config.ntp.servers:
        servers = tuple(
            NtpServerConfig(host=host, port=port)
            for host, port in (
                parse_host_port(text, default_port=123) for text in config.ntp.servers
            )
        )
        sources.ntp = NtpClient(
            NtpConfig(
                servers=servers,
                poll_interval_s=config.ntp.poll_interval_s,
                timeout_s=config.ntp.timeout_s,
            )
        )
    if config.rtc.i2c_bus is not None:
        try:
            bus = open_i2c_bus(config.rtc.i2c_bus)
            sources.rtc = Ds3231Clock(bus, RtcConfig(i2c_address=config.rtc.address))
        except DriverError as e:
            sources.unavailable["rtc0"] = f"not available: {e}"
            log.error("rtc0: %s; running without the RTC", e)
    if config.gps.pps_device:
        sources.pps = _open_pps(config.gps.pps_device, sources)
    return sources


def _open_pps(device: str, sources: Sources) -> PpsReceiver | None:
    try:
        from drivers.pps import PpsConfig, PpsReceiver

        return PpsReceiver(PpsConfig(device=device))
    except (DriverError, OSError, ValueError) as e:
        sources.unavailable["pps0"] = f"not available: {e}"
        log.error("pps0: cannot use %s: %s", device, e)
        return None


def _status_lights(config: ApplianceConfig, timekeeper: Timekeeper) -> StatusLights | None:
    """The status LEDs of ``[leds]``; with ``--simulate``, on simulated pins."""
    from appliance.runtime.leds import StatusLights

    ensemble, clock = timekeeper.ensemble, timekeeper.now_ns
    if not config.simulate:
        return StatusLights.for_config(config.leds, ensemble, clock=clock)
    from drivers.sim.gpio import SimGpio

    return StatusLights.for_config(config.leds, ensemble, clock=clock, open_pin=SimGpio().open)


class Appliance:
    """The sources, the timekeeper and the threads between them."""

    def __init__(self, config: ApplianceConfig, sources: Sources, timekeeper: Timekeeper) -> None:
        self.config = config
        self.sources = sources
        self.timekeeper = timekeeper
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rtc_error: str | None = None
        # Per driver loop, the last raw-monotonic instant it came round (ntp, rtc: here;
        # gps, pps: their drivers' alive_ns as well).
        self._alive: dict[str, int] = {}
        timekeeper.driver_notes = self.driver_notes
        self.lights = _status_lights(config, timekeeper)  # None: no [leds]

    @classmethod
    def from_config(cls, config: ApplianceConfig) -> Appliance:
        return cls(config, build_sources(config), Timekeeper(policy_for(config)))

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        s = self.sources
        if s.gps is not None:
            self._spawn("gps", self._run_gps)
        if s.ntp is not None:
            self._spawn("ntp", self._run_ntp)
        if s.rtc is not None:
            self._spawn("rtc", self._run_rtc)
        if s.pps is not None:
            self._spawn("pps", self._run_pps)
        if self.lights is not None:
            self.lights.start()
        for note in s.notes:
            log.info("appliance: %s", note)

    def stop(self) -> None:
        self._stop.set()
        if self.lights is not None:
            self.lights.stop()
        for source in (self.sources.gps, self.sources.pps):
            if source is not None:
                source.stop()
        for thread in self._threads:
            thread.join(THREAD_JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("appliance: thread %s did not stop in time", thread.name)
        if self.sources.world is not None:
            self.sources.world.stop()

    def dead_threads(self) -> list[str]:
        """The driver threads that ended while the appliance runs (a driver loop that
        fails is restarted in its thread: only a thread that is gone is dead)."""
        if self._stop.is_set():
            return []
        return [t.name for t in self._threads if not t.is_alive()]

    def stalled_threads(self, now_ns: int | None = None) -> list[str]:
        """The driver loops that have not come round for ``DRIVER_STALL_S``: alive, but
        stuck in a call (a USB serial adapter that hangs a read, an I2C bus that never
        answers)."""
        if self._stop.is_set():
            return []
        now_ns = mono_ns() if now_ns is None else now_ns
        drivers = {"gps": self.sources.gps, "pps": self.sources.pps}
        stalled = []
        for name, last in self._alive.items():
            source = drivers.get(name)
            if source is not None:
                last = max(last, source.alive_ns)
            quiet_s = (now_ns - last) / NS_PER_S
            if quiet_s > DRIVER_STALL_S:
                stalled.append(f"horodate-{name} (stuck for {quiet_s:.0f} s)")
        return stalled

    def source_names(self) -> set[str]:
        """The names of the configured sources (``gps0``, ``ntp:…``, ``rtc0``, ``pps0``)."""
        s = self.sources
        names = {src.config.name for src in (s.gps, s.rtc, s.pps) if src is not None}
        if s.ntp is not None:
            names.update(server.name for server in s.ntp.servers())
        return names | set(s.unavailable)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        self._alive[name] = mono_ns()
        thread = threading.Thread(
            target=self._guard, args=(name, target), name=f"horodate-{name}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _guard(self, name: str, target: Callable[[], None]) -> None:
        """Run a driver loop; on an unexpected failure, log and restart it with back-off."""
        backoff_s = 1.0
        while not self._stop.is_set():
            try:
                target()
                return
            except Exception:
                log.exception("%s: driver loop failed; restarting in %.0f s", name, backoff_s)
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_MAX_S)

    # -- what the drivers know that samples do not say -------------------------------------

    def driver_notes(self) -> dict[str, str]:
        """Per source name, a problem only the driver can see: a port that is not open, an
        NTP server that does not answer or sent a Kiss-o'-Death, an RTC that NACKs. Shown
        beside the clock's own status in ``/health``; a source with no sample yet is listed
        through its note alone."""
        from drivers.ntp import PollResult

        # Outcomes that leave no sample behind (the others reach the clock as untrusted
        # samples, with their reason).
        silent = {
            PollResult.TIMEOUT,
            PollResult.UNREACHABLE,
            PollResult.ORIGIN_MISMATCH,
            PollResult.MALFORMED,
            PollResult.KISS_RATE,
            PollResult.KISS_DENY,
            PollResult.KISS_RSTR,
            PollResult.KISS_OTHER,
        }
        notes: dict[str, str] = dict(self.sources.unavailable)
        gps = self.sources.gps
        if gps is not None and not gps.port_open.is_set():
            notes[gps.config.name] = (
                f"{gps.config.device} not open (cable pulled? device missing?); "
                f"retrying, {gps.reopens} reopen(s) so far"
            )
        if self.sources.ntp is not None:
            for server in self.sources.ntp.servers():
                if server.stopped:
                    notes[server.name] = f"{server.result.value}: {server.reason}; no longer asked"
                elif server.result in silent:
                    notes[server.name] = f"{server.result.value}: {server.reason}".rstrip(": ")
                elif server.backed_off:
                    notes[server.name] = (
                        f"asked to slow down: polled every {server.poll_interval_s:g} s"
                    )
        pps = self.sources.pps
        if pps is not None and pps.problem is not None:
            notes[pps.config.name] = f"{pps.problem}; retrying"
        if self.sources.rtc is not None and self._rtc_error is not None:
            notes[self.sources.rtc.config.name] = self._rtc_error
        return notes

    # -- the driver loops -----------------------------------------------------------------

    def _run_gps(self) -> None:
        gps, pps = self.sources.gps, self.sources.pps
        assert gps is not None
        for sample in gps.samples(self._stop):
            self.timekeeper.add(sample)
            if pps is not None:
                pps.add_gps(sample)  # the pulse is paired with the second NMEA labels

    def _run_ntp(self) -> None:
        client = self.sources.ntp
        assert client is not None
        while not self._stop.is_set():
            self._alive["ntp"] = mono_ns()
            for sample in client.poll_due(mono_ns()):
                self.timekeeper.add(sample)
            due = client.next_due_ns()
            wait_ns = NS_PER_S if due is None else max(0, due - mono_ns())
            self._stop.wait(min(wait_ns / NS_PER_S, 1.0))

    def _run_pps(self) -> None:
        pps = self.sources.pps
        assert pps is not None
        for sample in pps.samples(self._stop):
            self.timekeeper.add(sample)

    def _run_rtc(self) -> None:
        """Read the RTC every ``RTC_READ_INTERVAL_S``; between reads, ask the clock every
        ``RTC_DISCIPLINE_CHECK_S`` whether the RTC should be set from the consensus."""
        rtc = self.sources.rtc
        assert rtc is not None
        backoff_s = 1.0
        next_read = 0
        while not self._stop.is_set():
            self._alive["rtc"] = mono_ns()
            try:
                if mono_ns() >= next_read:
                    self.timekeeper.add(rtc.read())
                    next_read = mono_ns() + int(RTC_READ_INTERVAL_S * NS_PER_S)
                self._discipline_rtc()
                backoff_s = 1.0
                self._rtc_error = None
                self._stop.wait(RTC_DISCIPLINE_CHECK_S)
            except DriverError as e:
                self._rtc_error = str(e)
                log.warning("rtc0: %s; retrying in %.0f s", e, backoff_s)
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_MAX_S)

    def _discipline_rtc(self) -> None:
        from appliance.clock import RtcAction

        rtc = self.sources.rtc
        assert rtc is not None
        ensemble = self.timekeeper.ensemble
        action = ensemble.rtc_action(self.timekeeper.now_ns())
        if not isinstance(action, RtcAction):
            return
        residual_s = rtc.set_time(action.utc_at)
        check = rtc.read()  # read back through the same edge timing
        if not check.trusted:
            log.error("rtc0: set, but reads back untrusted: %s", check.reason)
            return
        try:
            ensemble.rtc_was_set(check.mono_ns, check.utc_ns, check.error_ns)
        except Exception as e:  # the clock lost its quorum meanwhile: try again later
            log.warning("rtc0: set, but not adopted as disciplined: %s", e)
            return
        self.timekeeper.add(check)  # its first sample as a disciplined reference
        log.info("rtc0: set from the consensus (residual %.1f ms)", residual_s * 1e3)
