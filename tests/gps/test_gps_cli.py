"""``horodate gps read``: on capture files and on a live pty, human and JSON output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time

import pytest

from horodate.cli import main
from tests.gps.support import NMEA_DIR, Pty, cycle

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_json_lines_on_a_capture(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gps", "read", str(NMEA_DIR / "april6_2019.log"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    samples = [r for r in rows if r["sample"]]
    assert [r["utc"] for r in samples] == ["1999-08-22T00:02:31.42Z"]
    assert samples[0]["trusted"] is False
    assert samples[0]["reason"] == "date 1999-08-22 before floor 2009-05-21 (week roll-over?)"
    assert any("'2208-1'" in r["reason"] for r in rows if not r["sample"])
    for r in samples:
        assert RFC3339_Z.match(r["utc"]) and isinstance(r["trusted"], bool)
        assert {"reason", "fix", "satellites", "hdop", "sentences"} <= set(r)


def test_human_output_is_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gps", "read", str(NMEA_DIR / "ac12.log")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# ") and "capture dated 2007-12-23" in lines[0]
    assert lines[1].split()[:3] == ["UTC", "(label)", "fix"]
    rows = [line for line in lines[2:] if not line.startswith("#")]
    assert rows[0].startswith("2007-12-23T19:32:21Z") and rows[0].endswith("trusted")
    verdict_col = lines[1].index("verdict")
    assert all(len(r) > verdict_col and r[verdict_col - 1] == " " for r in rows)
    assert lines[-1].startswith("# 13 samples, 7 trusted")


def test_floor_option_overrides_the_capture_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gps", "read", str(NMEA_DIR / "ac12.log"), "--json", "--floor", "2026-11-01"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and not any(r["trusted"] for r in rows)
    assert "before floor 2026-11-01" in rows[0]["reason"]


def test_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gps", "read", "/nonexistent/gps.log"]) == 1
    assert "No such file or directory" in capsys.readouterr().err


def test_bad_floor_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["gps", "read", "x", "--floor", "2026-13-01"])


def test_live_device_through_the_console_command() -> None:
    pty = Pty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "horodate", "gps", "read", pty.path, "--json",
             "--floor", "2026-01-01", "--count", "2", "--seconds", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

        # pyserial flushes input when it opens the port, and the command takes a moment to
        # start: keep sending one cycle every 0.3 s until it has printed its two samples.
        def feed() -> None:
            for second in range(60):
                if proc.poll() is not None:
                    return
                pty.write_all(cycle(f"1200{second:02d}.00", "141126"))
                time.sleep(0.3)

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        out, err = proc.communicate(timeout=30)
        writer.join(5)
    finally:
        pty.close()
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and all(r["trusted"] for r in rows)
    first, second = (int(r["utc"][17:19]) for r in rows)
    assert rows[0]["utc"].startswith("2026-11-14T12:00:") and second == first + 1
