"""``horodate demo`` — the README's first quick-start command — runs the whole chain and
stops by itself: simulated hardware read by the real drivers, a simulated school's morning
sealed in the vault, tokens checked by openssl, a TSA outage the vault rides through, and
``vault verify`` passing at the end on ``DIR/vault``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_issues_verified_tokens_and_refuses_during_the_alarm(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "horodate", "demo", "--seconds", "45", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the clock can prove the time" in out
    assert "entry 0: " in out and "201 sealed" in out and "openssl ts -verify: OK" in out
    assert "FAILED" not in out
    # The school's morning: a late arrival, a correction, a stale signature refused.
    assert "arrives 12 minutes late" in out and "corrects entry" in out
    assert "refused (422 session_moved)" in out
    # The first scheduled fault (GPS and NTP jumping together) is refused, not followed:
    # the vault keeps accepting (202), then seals the backlog when tokens come back.
    assert "FAULT: GPS and NTP jump 2.5 s together" in out
    assert "NOT ISSUING: clock alarm" in out
    assert "202 accepted, durable, NOT sealed yet" in out
    assert "the vault sealed its backlog" in out
    assert "vault verify: PASSED" in out
    assert (tmp_path / "vault" / "vault.sqlite3").exists()
    assert (tmp_path / "appliance" / "keys" / "ca.pem").exists()
    assert out.rstrip().splitlines()[-1].split("] ")[1].startswith("stopped:")
