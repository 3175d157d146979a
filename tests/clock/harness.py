"""The clock tests' runner: a virtual world fed to the ensemble, with the invariants checked
at every step (truth inside the bound while issuing, genTime monotone, a reason when not)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.clock import Ensemble, TimeNotAvailable

from .world import Step, World, run


def checked_run(
    world: World, ensemble: Ensemble, until_s: float, *, step_s: float = 1.0
) -> Iterator[Step]:
    """``run``, asserting at every step what must hold whatever the faults."""
    last_issued: int | None = None
    for step in run(world, ensemble, until_s, step_s=step_s):
        a = step.assessment
        if a.issuing:
            assert a.utc_ns is not None and a.bound_ns is not None
            assert a.bound_ns <= ensemble.policy.max_error_s * 1e9
            assert abs(a.utc_ns - step.truth_posix_ns) <= a.bound_ns, (
                f"t={step.t_s:.0f} s: truth outside the bound while issuing "
                f"(off by {(a.utc_ns - step.truth_posix_ns) / 1e6:.3f} ms, "
                f"bound {a.bound_ns / 1e6:.3f} ms, state {a.state.value})"
            )
            m = world.mono(step.t_s)
            issued = ensemble.issue(m)
            assert abs(issued.utc_ns - step.truth_posix_ns) <= issued.bound_ns
            if last_issued is not None:
                assert issued.utc_ns >= last_issued
            last_issued = issued.utc_ns
        else:
            assert a.reason, f"t={step.t_s:.0f} s: not issuing ({a.state.value}) without a reason"
            with pytest.raises(TimeNotAvailable):
                ensemble.issue(world.mono(step.t_s))
        yield step
