"""``horodate demo`` — the README's first quick-start command — runs the whole chain and
stops by itself: simulated hardware read by the real drivers, tokens checked by openssl."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_issues_verified_tokens_and_refuses_during_the_alarm() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "horodate", "demo", "--seconds", "28"],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the clock can prove the time" in out
    assert "token #1:" in out and "openssl ts -verify: OK" in out
    assert "FAILED" not in out
    # The first scheduled fault (GPS and NTP jumping together) is refused, not followed.
    assert "FAULT: GPS and NTP jump 2.5 s together" in out
    assert "NOT ISSUING: clock alarm" in out
    assert "refused:" in out and "timeNotAvailable" in out
    assert out.rstrip().splitlines()[-1].split("] ")[1].startswith("stopped:")
