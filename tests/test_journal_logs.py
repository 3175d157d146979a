"""Logs that read well in journald: one event a line, its level and its source; under
systemd (``$JOURNAL_STREAM`` naming stderr) each line carries its syslog priority ``<N>``
and no timestamp; and the faults a deployment expects (a TSA down, a disk full, a bad NMEA
line, a GPS device missing) are one line each, without a traceback."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from horodate import logs
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]


def journal_env(stream: Path) -> dict[str, str]:
    st = os.stat(stream)
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_syslog_priorities_are_sd_daemons() -> None:
    assert [logs.syslog_priority(n) for n in (10, 20, 30, 40, 50)] == [7, 6, 4, 3, 2]
    assert logs.syslog_priority(25) == 4  # between INFO and WARNING: the more severe


def test_under_journald_a_line_is_its_priority_level_and_source_and_no_timestamp(
    tmp_path: Path,
) -> None:
    path = tmp_path / "stderr"
    with path.open("w") as stream:
        assert logs.writes_to_journal(stream, journal_env(path))
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logs.JournalFormatter())
        logger = logging.getLogger("horodate.test.journal")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            logger.warning("the TSA does not answer: %s", "connection refused")
            try:
                raise RuntimeError("a bug")
            except RuntimeError:
                logger.exception("unexpected")
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
    lines = path.read_text().splitlines()
    assert (
        lines[0] == "<4>WARNING horodate.test.journal: the TSA does not answer: connection refused"
    )
    assert lines[1] == "<3>ERROR horodate.test.journal: unexpected"
    # the traceback's lines keep the error's priority: journald files them all at <3>
    assert len(lines) > 2 and all(line.startswith("<3>  ") for line in lines[2:])


def test_a_journal_stream_that_is_not_our_stderr_keeps_the_plain_format(tmp_path: Path) -> None:
    other, mine = tmp_path / "other", tmp_path / "mine"
    other.touch()
    with mine.open("w") as stream:
        assert not logs.writes_to_journal(stream, journal_env(other))
        assert not logs.writes_to_journal(stream, {})
        assert not isinstance(logs.formatter_for(stream), logs.JournalFormatter)


def test_the_command_line_writes_journald_lines_when_systemd_gave_it_the_stream(
    tmp_path: Path,
) -> None:
    """The CLI's logging configuration in a fresh process whose stderr is the "journal
    stream"; and without ``$JOURNAL_STREAM``, today's format."""
    err = tmp_path / "stderr"
    err.touch()
    script = "import logging, sys; from horodate.cli import configure_logging\n"
    script += "configure_logging(1); logging.getLogger('horodate.vault').info('one event')\n"
    with err.open("w") as stream:
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, **journal_env(err)},
            stderr=stream,
            cwd=ROOT,
            check=True,
            timeout=60,
        )
    assert err.read_text() == "<6>INFO horodate.vault: one event\n"
    plain = subprocess.run(
        [sys.executable, "-c", script],
        env={k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"},
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    assert plain.stderr.endswith(" INFO    horodate.vault: one event\n")  # timestamp first


# --- the expected faults: one line each, no traceback --------------------------------------


def one_line_each(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    records = [r for r in caplog.records if r.levelno >= level]
    for r in records:
        assert r.exc_info is None and r.exc_text is None, f"a traceback for {r.getMessage()!r}"
        assert "\n" not in r.getMessage(), r.getMessage()
    return [r.getMessage() for r in records]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_tsa_down_is_one_warning_for_the_vault(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from appliance.tsa.dev_pki import init_dev_pki
    from daemon.vault import Vault, VaultConfig
    from timestamping.aio_client import AsyncTsaClient, ClientPolicy

    ca = init_dev_pki(tmp_path / "pki", now=dt.datetime.now(dt.UTC)).ca_cert
    url = f"http://127.0.0.1:{closed_port()}/tsa"
    config = VaultConfig(data_dir=tmp_path / "vault", tsa_urls=(url,), tsa_ca=ca)
    policy = ClientPolicy(attempts_per_tsa=1)
    caplog.set_level(logging.INFO)
    async with AsyncTsaClient((url,), ca.read_bytes(), policy=policy) as tsa:
        vault = Vault(config, tsa=tsa)
        await vault.start()  # its first checkpoint: the TSA does not answer
        try:
            assert await vault._seal_inline([bytes(32)]) == [None]  # an entry stays pending
        finally:
            await vault.stop()
    warnings = one_line_each(caplog)
    assert any("no token from the TSA" in w for w in warnings), warnings
    assert sum("no token from the TSA" in w for w in warnings) == 1  # not once per attempt


class FullDisk:
    """A store whose COMMIT fails as SQLite's does when the disk is full."""

    writer = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        yield
        raise sqlite3.OperationalError("database or disk is full")

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        yield None


async def test_a_full_disk_is_one_error_for_the_vault(caplog: pytest.LogCaptureFixture) -> None:
    from daemon.committer import Committer
    from daemon.errors import VaultError

    committer = Committer(FullDisk(), on_rollback=lambda writer: None)  # type: ignore[arg-type]
    committer.start()
    try:
        with pytest.raises(VaultError, match="disk is full"):
            await committer.run(lambda writer: 1)
    finally:
        committer.stop()
    errors = one_line_each(caplog, logging.ERROR)
    assert errors and "rolled back: database or disk is full" in errors[0]


def test_bad_nmea_lines_log_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    from drivers.nmea import GpsConfig, NmeaDecoder

    caplog.set_level(logging.DEBUG)
    decoder = NmeaDecoder(GpsConfig(device="capture"))
    bad = [
        b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*00\r\n",  # checksum
        b"\x00\xff\xfe garbage \x80\r\n",  # binary junk (a wrong baud rate)
        b"$GPRMC,2>5961,A,4807.038,N*1F\r\n",  # fields that do not parse
        b"$GPRMC" + b"," * 300 + b"\r\n",  # longer than any sentence
    ]
    for n, line in enumerate(bad):
        decoder.feed(line, n * 1_000_000_000)
    decoder.flush()
    for r in caplog.records:
        assert r.exc_info is None, r.getMessage()
    one_line_each(caplog, logging.DEBUG)


def test_a_missing_gps_device_is_one_warning_then_quiet_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from drivers.gps import GpsConfig, GpsReceiver

    caplog.set_level(logging.INFO)
    gps = GpsReceiver(
        GpsConfig(device=str(tmp_path / "ttyAMA0"), reopen_backoff_min_s=0.01)  # not there
    )
    stop = threading.Event()
    reader = threading.Thread(target=lambda: list(gps.samples(stop)), daemon=True)
    reader.start()
    try:
        wait_until(lambda: len(caplog.records) >= 3, 10, "the driver retrying")
    finally:
        stop.set()
        gps.stop()
        reader.join(5)
    assert len(one_line_each(caplog, logging.WARNING)) == 1  # then INFO lines, not a flood
    one_line_each(caplog, logging.INFO)


def test_the_vault_command_says_a_taken_port_in_one_line(tmp_path: Path) -> None:
    """A fault at start (the port taken) is one line on stderr and exit 1, no traceback."""
    from appliance.tsa.dev_pki import init_dev_pki

    ca = init_dev_pki(tmp_path / "pki", now=dt.datetime.now(dt.UTC)).ca_cert
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "horodate",
                "vault",
                "--data-dir",
                str(tmp_path / "v"),
                "--listen",
                f"127.0.0.1:{port}",
                "--tsa-ca",
                str(ca),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("horodate vault: ")
