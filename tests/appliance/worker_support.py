"""What a TSA worker process started by a test runs: kept apart from the test modules, so
that a spawned worker imports only the appliance, not pytest, Hypothesis and the tests."""

from __future__ import annotations

from typing import Any

import appliance.runtime.shared_clock as shared_clock_module
from appliance.runtime.workers import WorkerSpec, worker_main


def worker_on_the_tests_clock(spec: WorkerSpec, mono: Any) -> None:
    """A real TSA worker (``worker_main``: its engine, serials, issuance log and fast lane,
    as the pool starts it), whose raw-monotonic clock is the test's: ``mono``, a shared
    ``RawValue`` of nanoseconds that the test moves."""
    shared_clock_module.mono_ns = lambda: int(mono.value)  # type: ignore[attr-defined]
    worker_main(spec)
