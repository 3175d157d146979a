"""PPS: the GPS receiver's pulse per second, through the Linux PPS API (``/dev/ppsN``).

NMEA places a second to within the receiver's latency (hundreds of ms); the pulse's
leading (assert) edge marks the start of the second to about a microsecond. But a pulse
does not say *which* second: it is paired here with the NMEA cycle that labels it.

Public API (the appliance)::

    pps = PpsReceiver(PpsConfig(device="/dev/pps0"))
    # GPS thread:  for s in gps.samples(stop): ensemble.add(s); pps.add_gps(s)
    # PPS thread:
    for pps_sample in pps.samples(stop):          # PpsSample(TimeSample), kind PPS
        ensemble.add(pps_sample)

and its parts: ``PpsDevice(path).fetch(timeout_s)`` (open + ``PPS_FETCH``, returns a
:class:`PpsPulse` on ``CLOCK_MONOTONIC_RAW``) and the pure :class:`PpsPairer`.

Layout of the kernel structures (``include/uapi/linux/pps.h``)::

    struct pps_ktime { __s64 sec; __s32 nsec; __u32 flags; };            16 bytes
    struct pps_kinfo { __u32 assert_sequence; __u32 clear_sequence;
                       struct pps_ktime assert_tu; struct pps_ktime clear_tu;
                       int current_mode; };                               48 bytes
    struct pps_fdata { struct pps_kinfo info; struct pps_ktime timeout; } 64 bytes

``__s64`` is 8-byte aligned on aarch64, x86-64 and 32-bit ARM EABI alike (AAPCS §4.1), so
``pps_kinfo`` carries 4 bytes of tail padding after ``current_mode`` on all three; only
i386 (4-byte aligned ``__s64``) packs it to 44. ``PPS_FETCH`` is
``_IOWR('p', 0xa4, struct pps_fdata *)``: the size encoded is that of a *pointer*, so the
number is 0xC00870A4 on 64-bit and 0xC00470A4 on 32-bit userlands.

Kernel PPS timestamps are ``CLOCK_REALTIME``. They are moved onto ``CLOCK_MONOTONIC_RAW``
with a (monotonic, realtime) pair read right after the fetch returns; see
:func:`realtime_to_mono` for the error this adds.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import math
import os
import platform
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

from drivers.errors import DriverError
from drivers.monotonic import NS_PER_S, mono_ns, paired_ns
from drivers.nmea import GpsSample
from drivers.sample import SourceKind, TimeSample

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- kernel ABI

# asm-generic/ioctl.h (x86, ARM, arm64): dir:2 | size:14 | type:8 | nr:8
_IOC_NRSHIFT, _IOC_TYPESHIFT, _IOC_SIZESHIFT, _IOC_DIRSHIFT = 0, 8, 16, 30
_IOC_WRITE, _IOC_READ = 1, 2

PPS_TIME_INVALID = 1 << 0  # linux/pps.h: in a timeout, "wait forever"
PPS_CAPTUREASSERT = 0x01
PPS_CANWAIT = 0x100


def ioc(direction: int, kind: str, nr: int, size: int) -> int:
    """``_IOC()`` of asm-generic/ioctl.h."""
    return (
        (direction << _IOC_DIRSHIFT)
        | (size << _IOC_SIZESHIFT)
        | (ord(kind) << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
    )


def pps_fetch_number(pointer_size: int) -> int:
    """``PPS_FETCH = _IOWR('p', 0xa4, struct pps_fdata *)`` for a userland's pointer size."""
    if pointer_size not in (4, 8):
        raise ValueError(f"pointer size must be 4 or 8, got {pointer_size}")
    return ioc(_IOC_READ | _IOC_WRITE, "p", 0xA4, pointer_size)


def pps_getcap_number(pointer_size: int) -> int:
    """``PPS_GETCAP = _IOR('p', 0xa3, int *)``."""
    return ioc(_IOC_READ, "p", 0xA3, pointer_size)


POINTER_SIZE = ctypes.sizeof(ctypes.c_void_p)
PPS_FETCH = pps_fetch_number(POINTER_SIZE)
PPS_GETCAP = pps_getcap_number(POINTER_SIZE)

# Little-endian, explicit padding: identical on aarch64, armv7l (EABI) and x86-64.
PPS_KTIME = struct.Struct("<qiI")  # sec, nsec, flags
PPS_KINFO = struct.Struct("<II" + "qiI" + "qiI" + "i4x")  # + tail padding to 8
PPS_FDATA = struct.Struct("<II" + "qiI" + "qiI" + "i4x" + "qiI")  # info, timeout
# machine -> whether __s64 is 8-byte aligned there (our layout); i386 is not supported.
SUPPORTED_MACHINES = ("x86_64", "aarch64", "armv7l", "armv6l", "armv8l")


class PpsTimeout(DriverError):
    """No pulse within the fetch timeout (antenna unplugged, receiver without fix)."""


class PpsPulseRejected(DriverError):
    """One pulse that cannot be used (stale, realtime stepped, no new edge)."""


@dataclass(frozen=True, slots=True)
class PpsFetch:
    """One ``PPS_FETCH`` answer, as the kernel gave it (realtime timestamps)."""

    assert_sequence: int
    assert_realtime_ns: int
    clear_sequence: int
    clear_realtime_ns: int
    current_mode: int


def pack_fetch_request(timeout_s: float | None) -> bytes:
    """A ``pps_fdata`` with an empty ``info`` and the timeout (None: wait forever)."""
    if timeout_s is None:
        return PPS_FDATA.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, PPS_TIME_INVALID)
    sec = math.floor(timeout_s)
    nsec = round((timeout_s - sec) * NS_PER_S)
    return PPS_FDATA.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, sec, nsec, 0)


def unpack_fetch(buf: bytes) -> PpsFetch:
    (a_seq, c_seq, a_sec, a_nsec, _a_fl, c_sec, c_nsec, _c_fl, mode, *_timeout) = PPS_FDATA.unpack(
        buf
    )
    return PpsFetch(
        assert_sequence=a_seq,
        assert_realtime_ns=a_sec * NS_PER_S + a_nsec,
        clear_sequence=c_seq,
        clear_realtime_ns=c_sec * NS_PER_S + c_nsec,
        current_mode=mode,
    )


# --------------------------------------------------------------------------- pure core

# chronyd slews CLOCK_REALTIME at up to 83 333 ppm (its default maxslewrate); ntpd at 500.
REALTIME_MAX_SLEW_PPM = 83_333.0


@dataclass(frozen=True, slots=True)
class PpsPulse:
    """An assert edge on ``CLOCK_MONOTONIC_RAW``, ± ``error_ns`` from the mapping."""

    sequence: int
    mono_ns: int
    error_ns: int


def realtime_to_mono(
    edge_realtime_ns: int,
    pair_mono_ns: int,
    pair_realtime_ns: int,
    *,
    max_age_s: float = 1.5,
    max_slew_ppm: float = REALTIME_MAX_SLEW_PPM,
) -> tuple[int, int]:
    """Map a kernel realtime timestamp onto the raw monotonic timescale.

    ``mono = edge − (pair_realtime − pair_mono)``: the realtime−monotonic offset read just
    after the fetch is assumed to hold at the edge. Between the edge and the pair reading
    (``age``) an NTP daemon may slew realtime by up to ``max_slew_ppm``, so the error is
    ``age × max_slew_ppm`` (83 ppm·ms: ~8 µs for the ~100 µs a blocking fetch takes to
    return, 83 ms if the edge were a second old — hence ``max_age_s``) plus the pairing
    error of :func:`drivers.monotonic.paired_ns` (under a microsecond, counted as 1 µs).
    A realtime step between edge and pair shows as an edge in the future or too old, and
    raises :class:`DriverError`.
    """
    age_ns = pair_realtime_ns - edge_realtime_ns
    if age_ns < 0:
        raise DriverError(f"PPS edge {-age_ns} ns in the future of realtime: clock stepped?")
    if age_ns > max_age_s * NS_PER_S:
        raise DriverError(f"PPS edge {age_ns / NS_PER_S:.3f} s old: too old to map safely")
    mono = pair_mono_ns - age_ns
    error = math.ceil(age_ns * max_slew_ppm * 1e-6) + 1_000
    return mono, error


@dataclass(frozen=True, slots=True, kw_only=True)
class PpsConfig:
    """``min_lag_s``/``max_lag_s``: where the first NMEA sentence of second S may arrive
    after S's pulse. A receiver slower than ``max_lag_s`` gets no PPS samples: a pulse
    then sits too close to the next second's to say which one the sentence marks."""

    device: str = "/dev/pps0"
    name: str = "pps0"
    pulse_error_ns: int = 5_000  # the edge's own jitter (GPIO interrupt latency), ns
    min_lag_s: float = 0.0
    max_lag_s: float = 0.9
    fetch_timeout_s: float = 1.5
    pulses_kept: int = 8

    def __post_init__(self) -> None:
        if not self.name.startswith(SourceKind.PPS.value):
            raise ValueError(f"PPS source name must start with 'pps', got {self.name!r}")
        if not 0.0 <= self.min_lag_s < self.max_lag_s < 1.0:
            raise ValueError("need 0 <= min_lag_s < max_lag_s < 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class PpsSample(TimeSample):
    """At ``mono_ns`` (the assert edge) UTC was exactly the second ``utc_ns``."""

    sequence: int
    gps_source: str
    lag_ns: int  # arrival of the NMEA cycle minus the edge


class PpsPairer:
    """Pairs each pulse with the NMEA second it marks. Pure.

    The sentence labelled S arrives ``lag`` after S's pulse; the pair is made when exactly
    one kept pulse lies in ``[arrival − max_lag_s, arrival − min_lag_s]`` and the label is
    a whole second. A pulse is used at most once. The PPS sample is trusted only when the
    NMEA cycle it was paired with is.
    """

    def __init__(self, config: PpsConfig) -> None:
        self.config = config
        self._pulses: deque[PpsPulse] = deque(maxlen=config.pulses_kept)
        self._used: set[int] = set()
        self.ambiguous = 0
        self.unpaired_gps = 0

    def add_pulse(self, pulse: PpsPulse) -> None:
        self._pulses.append(pulse)
        kept = {p.sequence for p in self._pulses}
        self._used &= kept

    def add_gps(self, sample: GpsSample) -> list[PpsSample]:
        cfg = self.config
        if sample.label_utc_ns % NS_PER_S != 0:
            self.unpaired_gps += 1
            return []  # a label between seconds marks no pulse
        lo = sample.mono_ns - round(cfg.max_lag_s * NS_PER_S)
        hi = sample.mono_ns - round(cfg.min_lag_s * NS_PER_S)
        candidates = [p for p in self._pulses if lo <= p.mono_ns <= hi]
        if len(candidates) != 1:
            self.ambiguous += len(candidates) > 1
            self.unpaired_gps += 1
            return []
        pulse = candidates[0]
        if pulse.sequence in self._used:
            self.unpaired_gps += 1
            return []
        self._used.add(pulse.sequence)
        reason = "" if sample.trusted else f"its NMEA second is untrusted: {sample.reason}"
        return [
            PpsSample(
                source=cfg.name,
                kind=SourceKind.PPS,
                mono_ns=pulse.mono_ns,
                utc_ns=sample.label_utc_ns,
                error_ns=cfg.pulse_error_ns + pulse.error_ns,
                trusted=sample.trusted,
                reason=reason,
                leap=sample.leap,
                sequence=pulse.sequence,
                gps_source=sample.source,
                lag_ns=sample.mono_ns - pulse.mono_ns,
            )
        ]


# --------------------------------------------------------------------------- device


class PpsDevice:
    """``/dev/ppsN``: open it, wait for the next assert edge with ``PPS_FETCH``."""

    def __init__(self, path: str) -> None:
        if platform.machine() not in SUPPORTED_MACHINES:
            raise DriverError(f"PPS: struct layout not verified on {platform.machine()}")
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise DriverError(f"cannot open {path}: {e}") from e
        self._last_sequence: int | None = None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PpsDevice:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def fetch_raw(self, timeout_s: float | None) -> PpsFetch:
        buf = bytearray(pack_fetch_request(timeout_s))
        try:
            fcntl.ioctl(self._fd, PPS_FETCH, buf, True)
        except OSError as e:
            if e.errno == errno.ETIMEDOUT:
                raise PpsTimeout(f"{self.path}: no pulse within {timeout_s} s") from e
            raise DriverError(f"{self.path}: PPS_FETCH failed: {e}") from e
        return unpack_fetch(bytes(buf))

    def fetch(self, timeout_s: float = 1.5) -> PpsPulse:
        """Wait (at most ``timeout_s``) for the next assert edge; map it to monotonic raw."""
        f = self.fetch_raw(timeout_s)
        pair_mono, pair_real = paired_ns()  # right after the fetch: see realtime_to_mono
        if f.assert_sequence == self._last_sequence:
            raise PpsPulseRejected(f"{self.path}: no new assert edge ({f.assert_sequence})")
        self._last_sequence = f.assert_sequence
        try:
            mono, error = realtime_to_mono(f.assert_realtime_ns, pair_mono, pair_real)
        except DriverError as e:
            raise PpsPulseRejected(f"{self.path}: {e}") from e
        return PpsPulse(sequence=f.assert_sequence, mono_ns=mono, error_ns=error)


class PulseSource:
    """What :class:`PpsReceiver` needs of a device (a :class:`PpsDevice`)."""

    def fetch(self, timeout_s: float = 1.5) -> PpsPulse:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class PpsReceiver:
    """Reads pulses in its own thread and pairs them with the GPS samples it is given.

    :meth:`add_gps` is thread-safe (call it from the GPS thread with every GPS sample);
    :meth:`samples` blocks in ``PPS_FETCH`` at most ``fetch_timeout_s`` at a time and
    yields the PPS samples made since. A missing or failing device is reopened with
    back-off (1 s doubling to 30 s), logged once.
    """

    def __init__(
        self,
        config: PpsConfig,
        *,
        open_device: Callable[[str], PulseSource | PpsDevice] = PpsDevice,
    ) -> None:
        self.config = config
        self._open = open_device
        self._pairer = PpsPairer(config)
        self._lock = threading.Lock()
        self._ready: deque[PpsSample] = deque(maxlen=64)
        self._stop = threading.Event()
        # Why the device is not being read right now (None while it is): for /health.
        self.problem: str | None = None
        # The last instant the reading loop came round (each fetch returns within
        # ``fetch_timeout_s``; a reopen waits at most 30 s): stale if the loop is stuck.
        self.alive_ns = mono_ns()

    def stop(self) -> None:
        self._stop.set()

    def add_gps(self, sample: GpsSample) -> None:
        with self._lock:
            self._ready.extend(self._pairer.add_gps(sample))

    def _drain(self) -> list[PpsSample]:
        with self._lock:
            out = list(self._ready)
            self._ready.clear()
        return out

    def samples(self, stop: threading.Event | None = None) -> Iterator[PpsSample]:
        cfg = self.config
        backoff_s = 1.0
        reported = False

        def stopping() -> bool:
            return self._stop.is_set() or (stop is not None and stop.is_set())

        while not stopping():
            self.alive_ns = mono_ns()
            try:
                device = self._open(cfg.device)
            except DriverError as e:
                self.problem = str(e)
                (log.info if reported else log.warning)(
                    "%s: %s; retrying in %s s", cfg.name, e, backoff_s
                )
                reported = True
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 30.0)
                continue
            if reported:
                log.warning("%s: %s is back", cfg.name, cfg.device)
            reported = False
            self.problem = None
            try:
                while not stopping():
                    self.alive_ns = mono_ns()
                    try:
                        pulse = device.fetch(cfg.fetch_timeout_s)
                    except (PpsTimeout, PpsPulseRejected) as e:
                        log.info("%s: %s", cfg.name, e)
                    else:
                        with self._lock:
                            self._pairer.add_pulse(pulse)
                        backoff_s = 1.0
                    yield from self._drain()
            except DriverError as e:
                self.problem = str(e)
                log.warning("%s: %s; reopening in %s s", cfg.name, e, backoff_s)
                reported = True
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 30.0)
            finally:
                device.close()
        yield from self._drain()
