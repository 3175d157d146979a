"""The simulated GPS read end to end by Horodate's own GPS driver (drivers.gps over pyserial).

Each scenario runs its own receiver and driver; they run concurrently, once per module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from drivers.gps import GpsConfig, GpsReceiver, GpsSample
from drivers.monotonic import NS_PER_S, paired_ns
from drivers.nmea import Fix
from drivers.sample import Leap
from drivers.sim.faults import GpsFaults
from drivers.sim.gps import SimGps, UtcLabel, nmea_cycle
from tests.test_sim_gps import FaultBox

LEAP_LABEL = UtcLabel(2026, 12, 31, 23, 59, 60)


def read_samples(
    faults: GpsFaults, count: int, before: Callable[[SimGps], None] | None = None
) -> list[GpsSample]:
    """Start a receiver with ``faults``, read ``count`` samples through the real driver."""
    with SimGps(FaultBox(faults), latency_s=0.1, jitter_s=0.0, baud=None, seed=11) as gps:
        if before is not None:
            before(gps)
        receiver = GpsReceiver(GpsConfig(device=gps.device, latency_s=0.1, cycle_quiet_s=0.3))
        samples: list[GpsSample] = []
        stop = threading.Event()

        def run() -> None:
            for sample in receiver.samples(stop):
                samples.append(sample)
                if len(samples) >= count:
                    return

        reader = threading.Thread(target=run)
        reader.start()
        reader.join(count + 2.5)
        stop.set()
        receiver.stop()
        reader.join(1.0)
        assert not reader.is_alive()
    return samples


def truth_error_s(sample: GpsSample) -> float:
    m, r = paired_ns()
    return (sample.utc_ns - (r + sample.mono_ns - m)) / NS_PER_S


SCENARIOS: dict[str, Callable[[], list[GpsSample]]] = {
    "garbage": lambda: read_samples(GpsFaults(garbage=True), 2),
    "no_fix": lambda: read_samples(GpsFaults(fix=False), 1),
    "leap": lambda: read_samples(
        GpsFaults(), 2, before=lambda gps: gps.emit_once(nmea_cycle(LEAP_LABEL))
    ),
}


@pytest.fixture(scope="module")
def runs() -> dict[str, Future[list[GpsSample]]]:
    pool = ThreadPoolExecutor(max_workers=len(SCENARIOS), thread_name_prefix="scenario")
    futures = {name: pool.submit(f) for name, f in SCENARIOS.items()}
    pool.shutdown(wait=True)
    return futures


def test_garbage_does_not_stop_the_driver_from_sampling(
    runs: dict[str, Future[list[GpsSample]]],
) -> None:
    samples = runs["garbage"].result()
    assert len(samples) == 2
    for sample in samples:
        assert sample.trusted, sample.reason
        assert abs(truth_error_s(sample)) < 0.15


def test_no_fix_still_gives_time_that_the_driver_refuses_to_trust(
    runs: dict[str, Future[list[GpsSample]]],
) -> None:
    samples = runs["no_fix"].result()
    assert samples
    sample = samples[0]
    assert sample.fix is Fix.NONE and not sample.trusted and sample.reason
    assert abs(truth_error_s(sample)) < 0.15  # the time is there, only the fix is missing


def test_a_leap_second_label_reaches_the_driver(
    runs: dict[str, Future[list[GpsSample]]],
) -> None:
    leap, after = runs["leap"].result()
    assert leap.leap_second and leap.leap is Leap.INSERT
    # 23:59:60 is counted as 23:59:59 + 1 s in POSIX time
    assert leap.label_utc_ns == LEAP_LABEL.to_posix_s() * NS_PER_S
    assert not after.leap_second and abs(truth_error_s(after)) < 0.15
