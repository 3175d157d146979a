"""Every issuance log read together: the merged listing, the integrity check, and
``horodate issued`` (listing, finding a serial or an imprint, ``--json``, ``--check``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.issuance.issued import check, log_paths, merged
from appliance.issuance.issuer import issued_record
from appliance.issuance.log import MAGIC, IssuanceLog, Issued, decode_payload, encode_record
from appliance.issuance.serials import SerialAllocator, split_serial
from appliance.tsa import FailInfo, TimeStampAuthority, reject
from appliance.tsa.credentials import TsaCredentials
from horodate.cli import main as horodate
from tests.tsa.conftest import POLICY_OID, write_durably
from timestamping import Digest, build_request

T0 = 1_800_000_000_000_000_000  # 2027-01-15T08:00:00Z, in ns


def issued(serial: int, gen_ns: int, data: bytes = b"x", nonce: int | None = None) -> Issued:
    return Issued(
        serial=serial,
        gen_time_ns=gen_ns,
        accuracy_us=1500,
        hash_algorithm="sha256",
        message_imprint=hashlib.sha256(data).digest(),
        nonce=nonce,
        ensemble_state="synchronised",
    )


def write_log(path: Path, records: list[Issued]) -> None:
    with IssuanceLog(path) as log:
        write_durably(log, records)


def two_processes(data: Path, per_log: int = 5) -> dict[str, list[Issued]]:
    """issued.log and issued-w1.log as the main process and one worker write them: each
    with its own serial state, their genTimes interleaved."""
    logs: dict[str, list[Issued]] = {}
    for k, (name, state) in enumerate(
        (("issued.log", "serials.state"), ("issued-w1.log", "serials-w1.state"))
    ):
        serials = SerialAllocator(data / state, create=True)
        try:
            logs[name] = [
                issued(serials.next(), T0 + (2 * i + k) * 1_000_000, b"%d-%d" % (k, i), nonce=i)
                for i in range(per_log)
            ]
        finally:
            serials.close()
        write_log(data / name, logs[name])
    return logs


def test_log_paths_finds_every_process_log_and_nothing_else(tmp_path: Path) -> None:
    for name in ("issued-w10.log", "issued-w2.log", "issued.log", "issued-old.log", "x.log"):
        (tmp_path / name).write_bytes(MAGIC)
    (tmp_path / "issued-w3.log").mkdir()
    assert [p.name for p in log_paths(tmp_path)] == [
        "issued.log",
        "issued-w2.log",
        "issued-w10.log",
    ]


def test_merged_is_in_gen_time_order_with_each_record_s_log(tmp_path: Path) -> None:
    logs = two_processes(tmp_path)
    entries = list(merged(log_paths(tmp_path)))
    assert [e.record.gen_time_ns for e in entries] == [T0 + i * 1_000_000 for i in range(10)]
    assert [e.log for e in entries[:4]] == ["issued.log", "issued-w1.log"] * 2
    assert sorted(e.record.serial for e in entries) == sorted(
        r.serial for records in logs.values() for r in records
    )


def test_two_processes_logs_check(tmp_path: Path) -> None:
    two_processes(tmp_path, per_log=7)
    report = check(log_paths(tmp_path))
    assert report.ok, report
    assert report.records == 14
    assert [log.records for log in report.logs] == [7, 7]
    assert report.logs[0].first_ns == T0 and report.logs[1].last_ns == T0 + 13_000_000
    assert all(len(log.instances) == 1 for log in report.logs)


def test_check_counts_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("appliance.issuance.issued.PROGRESS_EVERY", 2)
    two_processes(tmp_path)
    calls: list[tuple[str, int]] = []
    check(log_paths(tmp_path), lambda log, n: calls.append((log, n)))
    assert calls == [
        ("issued.log", 2),
        ("issued.log", 4),
        ("issued-w1.log", 2),
        ("issued-w1.log", 4),
    ]


def test_check_finds_gen_time_going_back_and_serials_not_going_up(tmp_path: Path) -> None:
    serials = SerialAllocator(tmp_path / "serials.state", create=True)
    a, b, c = serials.next(), serials.next(), serials.next()
    serials.close()
    write_log(
        tmp_path / "issued.log",
        [issued(a, T0), issued(b, T0 + 5), issued(b, T0 + 6), issued(c, T0 + 1), issued(a, T0 + 7)],
    )
    report = check(log_paths(tmp_path))
    assert not report.ok
    problems = report.logs[0].problems
    assert problems == [
        f"record #3: serial {b:#x} repeats serial {b:#x}",
        f"record #4 (serial {c:#x}): genTime goes back 0.000000 s",
        f"record #5: serial {a:#x} does not go up from serial {c:#x}",
    ]


def test_check_finds_a_serial_state_shared_by_two_logs(tmp_path: Path) -> None:
    serials = SerialAllocator(tmp_path / "serials.state", create=True)
    first, second = serials.next(), serials.next()
    serials.close()
    write_log(tmp_path / "issued.log", [issued(first, T0)])
    write_log(tmp_path / "issued-w1.log", [issued(second, T0 + 1)])  # a copied state
    report = check(log_paths(tmp_path))
    assert all(log.ok for log in report.logs)
    assert not report.ok
    instance = split_serial(first)[0]
    assert report.problems == [
        f"issued.log and issued-w1.log share serial instance {instance:016x}: one serial "
        "state was copied to another process or appliance, and their serial numbers are "
        "unique only by their run tags"
    ]


def test_check_reports_a_torn_tail_without_calling_it_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two_processes(tmp_path)
    path = tmp_path / "issued-w1.log"
    records_end = len(path.read_bytes().rstrip(b"\0"))  # the reserve's zeros follow
    partial = b'\x00\x00\x01\x00\xde\xad\xbe\xef{"serial":'  # a write cut short
    with open(path, "r+b") as f:
        f.seek(records_end)
        f.write(partial)
    report = check(log_paths(tmp_path))
    assert report.ok
    assert report.logs[1].torn_bytes == len(partial)
    assert report.logs[1].records == 5
    assert horodate(["issued", "--check", "--data-dir", str(tmp_path)]) == 0
    assert f"a torn last record ({len(partial)} bytes) ignored" in capsys.readouterr().out


def test_check_calls_a_bad_record_in_the_middle_damage(tmp_path: Path) -> None:
    two_processes(tmp_path)
    path = tmp_path / "issued.log"
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 20] ^= 0xFF  # inside the first record's payload
    path.write_bytes(bytes(data))
    report = check(log_paths(tmp_path))
    assert not report.ok
    assert report.logs[0].records == 0 and "corrupt" in report.logs[0].problems[0]
    assert report.logs[1].ok and report.logs[1].records == 5  # the other log is still read


# --- the command ----------------------------------------------------------------------------


def test_command_lists_every_log_in_gen_time_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = two_processes(tmp_path, per_log=3)
    assert horodate(["issued", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["GENTIME", "ACCURACY", "SERIAL", "LOG"]
    assert out[-1] == "6 records from 2 log(s)"
    first = logs["issued.log"][0]
    assert out[1].startswith("2027-01-15T08:00:00.000000Z") and "±1.5 ms" in out[1]
    assert f"{first.serial:#x}  issued.log" in out[1]
    assert out[2].split() == [f"sha256:{first.message_imprint.hex()}", "nonce", "0x0"]
    assert out[3].endswith("issued-w1.log") and out[3].startswith("2027-01-15T08:00:00.001000Z")


def test_command_finds_a_serial_or_an_imprint_and_says_when_nothing_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = two_processes(tmp_path)
    wanted = logs["issued-w1.log"][3]
    assert horodate(["issued", "--data-dir", str(tmp_path), "--serial", f"{wanted.serial:#x}"]) == 0
    out = capsys.readouterr().out
    assert f"{wanted.serial:#x}  issued-w1.log" in out and out.endswith("1 record from 2 log(s)\n")
    assert horodate(["issued", "--data-dir", str(tmp_path), "--serial", str(wanted.serial)]) == 0
    assert f"{wanted.serial:#x}" in capsys.readouterr().out

    imprint = wanted.message_imprint.hex().upper()
    assert horodate(["issued", "--data-dir", str(tmp_path), "--imprint", imprint, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["serial"] for line in lines] == [f"{wanted.serial:#x}"]

    assert horodate(["issued", "--data-dir", str(tmp_path), "--serial", "12345"]) == 1
    assert "no record matches" in capsys.readouterr().err


def test_command_json_lines_and_time_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two_processes(tmp_path)
    args = ["issued", "--data-dir", str(tmp_path), "--json"]
    window = ["--since", "2027-01-15T08:00:00.002Z", "--until", "2027-01-15T08:00:00.005+00:00"]
    assert horodate([*args, *window]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["gen_time_ns"] for r in rows] == [T0 + i * 1_000_000 for i in (2, 3, 4)]
    assert rows[0] == {
        "log": "issued.log",
        "serial": rows[0]["serial"],
        "gen_time": "2027-01-15T08:00:00.002000Z",
        "gen_time_ns": T0 + 2_000_000,
        "accuracy_us": 1500,
        "hash": "sha256",
        "imprint": hashlib.sha256(b"0-1").hexdigest(),
        "nonce": "1",
        "ensemble": "synchronised",
        "token_sha256": None,
    }
    assert int(rows[0]["serial"], 16) > 0


def test_command_check_passes_then_fails_on_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two_processes(tmp_path)
    assert horodate(["issued", "--check", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "issued-w1.log" in out and "5 records" in out
    assert out.endswith(
        "all 2 log(s) check: 10 records, whole, genTime never going back, serial numbers unique\n"
    )
    path = tmp_path / "issued-w1.log"
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    assert horodate(["issued", "--check", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and "corrupt" in out and "do NOT check" in out


def test_command_bad_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert horodate(["issued", "--data-dir", str(tmp_path)]) == 2
    assert "no issuance log" in capsys.readouterr().err
    assert horodate(["issued", "--data-dir", str(tmp_path / "absent")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "issued.log").write_bytes(b"not a log at all")
    assert horodate(["issued", "--data-dir", str(tmp_path)]) == 2
    assert "not a Horodate issuance log" in capsys.readouterr().err
    assert horodate(["issued", "--data-dir", str(tmp_path), "--check", "--serial", "5"]) == 2
    assert "--serial choose what to list; not with --check" in capsys.readouterr().err
    args = [
        "issued",
        "--data-dir",
        str(tmp_path),
        "--tsr",
        "x.tsr",
        "--json",
        "--since",
        "2026-01-01",
    ]
    assert horodate(args) == 2
    assert "--since, --json choose what to list; not with --tsr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        horodate(["issued", "--data-dir", str(tmp_path), "--serial", "0xZZ"])
    with pytest.raises(SystemExit):
        horodate(["issued", "--data-dir", str(tmp_path), "--since", "yesterday"])


def test_command_takes_the_data_directory_from_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    two_processes(data)
    config = tmp_path / "appliance.toml"
    config.write_text(f'[appliance]\ndata_dir = "{data}"\n')
    assert horodate(["issued", "--check", "--config", str(config)]) == 0
    assert "10 records" in capsys.readouterr().out
    config.write_text("[appliance]\nunknown = 1\n")
    assert horodate(["issued", "--config", str(config)]) == 2
    assert "unknown key" in capsys.readouterr().err


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), max_size=4),
    cut=st.integers(0, 4000),
)
def test_check_never_raises_on_a_damaged_log(
    tmp_path: Path, flips: list[tuple[int, int]], cut: int
) -> None:
    """Bytes flipped, a file cut short: the check reports, it never raises, and it never
    counts more records than were written."""
    data = tmp_path / "fuzz"
    data.mkdir(exist_ok=True)
    for old in data.iterdir():
        old.unlink()
    write_log(data / "issued.log", [issued(0x100 + i, T0 + i, b"%d" % i) for i in range(12)])
    raw = bytearray((data / "issued.log").read_bytes().rstrip(b"\0"))
    for at, mask in flips:
        raw[at % len(raw)] ^= mask
    (data / "issued.log").write_bytes(bytes(raw[: max(cut, 1)] if cut < len(raw) else raw))
    report = check(log_paths(data))
    assert report.records <= 12
    assert report.ok or report.logs[0].problems
    if not flips and cut >= len(raw):
        assert report.ok and report.records == 12


# --- one token a client holds ---------------------------------------------------------------


def logged_token(tmp_path: Path, creds: TsaCredentials) -> tuple[Path, Issued]:
    """A real token for a request made by the client helper, the record the server keeps of
    it, and its reply saved as a .tsr."""
    request = build_request(hashlib.sha256(b"roll call").digest(), digest=Digest.SHA256, nonce=7)
    serials = SerialAllocator(tmp_path / "serials.state", create=True)
    try:
        reply = TimeStampAuthority(creds, policy_oid=POLICY_OID).respond(
            request.der, time=lambda: (T0 + 123_456_000, 4_000_000), serial=serials.next
        )
    finally:
        serials.close()
    assert reply.granted
    framed = issued_record(reply, "synchronised")  # what the server writes, read back
    record = decode_payload(framed[8:])
    assert encode_record(record) == framed
    tsr = tmp_path / "held.tsr"
    tsr.write_bytes(reply.der)
    return tsr, record


def test_command_says_a_token_is_recorded_as_it_says(
    tmp_path: Path, credentials: Callable[[str], TsaCredentials], capsys: pytest.CaptureFixture[str]
) -> None:
    tsr, record = logged_token(tmp_path, credentials("ec-p256"))
    write_log(tmp_path / "issued-w1.log", [issued(0x10, T0), record, issued(0x11, T0 + 10**9)])
    assert horodate(["issued", "--data-dir", str(tmp_path), "--tsr", str(tsr)]) == 0
    out = capsys.readouterr().out
    assert f"serial {record.serial:#x} is recorded in issued-w1.log" in out
    assert "genTime   2027-01-15T08:00:00.123400Z" in out and "nonce     0x7" in out
    assert record.token_sha256 is not None
    assert f"token     sha256:{record.token_sha256.hex()}" in out
    assert out.endswith("the log says what the token says (its signature: `horodate verify`)\n")


def test_command_tells_a_token_from_another_with_the_same_contents(
    tmp_path: Path, credentials: Callable[[str], TsaCredentials], capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the issued token has the hash the log pinned (an ECDSA signature differs each
    time); a record from before the log kept hashes still matches on its fields."""
    tsr, record = logged_token(tmp_path, credentials("ec-p256"))
    other = replace(record, token_sha256=hashlib.sha256(b"another token").digest())
    write_log(tmp_path / "issued.log", [other])
    assert horodate(["issued", "--data-dir", str(tmp_path), "--tsr", str(tsr)]) == 1
    out = capsys.readouterr().out
    token_line = next(line for line in out.splitlines() if line.startswith("  token"))
    assert other.token_sha256 is not None
    assert token_line.endswith("DIFFERS") and other.token_sha256.hex() in token_line
    (tmp_path / "issued.log").unlink()
    write_log(tmp_path / "issued.log", [replace(record, token_sha256=None)])
    assert horodate(["issued", "--data-dir", str(tmp_path), "--tsr", str(tsr)]) == 0
    assert "token     not pinned" in capsys.readouterr().out


def test_command_says_when_a_token_is_not_recorded_or_recorded_otherwise(
    tmp_path: Path, credentials: Callable[[str], TsaCredentials], capsys: pytest.CaptureFixture[str]
) -> None:
    tsr, record = logged_token(tmp_path, credentials("ec-p256"))
    write_log(tmp_path / "issued.log", [issued(0x10, T0)])
    assert horodate(["issued", "--data-dir", str(tmp_path), "--tsr", str(tsr)]) == 1
    assert "is in no issuance log" in capsys.readouterr().out

    moved = replace(record, gen_time_ns=record.gen_time_ns + 2_000_000_000)
    write_log(tmp_path / "issued-w1.log", [moved])
    assert horodate(["issued", "--data-dir", str(tmp_path), "--tsr", str(tsr)]) == 1
    out = capsys.readouterr().out
    assert (
        "genTime   2027-01-15T08:00:00.123400Z (the log says 2027-01-15T08:00:02.123400Z)  DIFFERS"
        in out
    )
    assert "imprint" in out and "DIFFERS" not in out.split("imprint")[1].splitlines()[0]
    assert "does NOT say what the token says" in out


def test_command_refuses_a_file_that_holds_no_token(
    tmp_path: Path, credentials: Callable[[str], TsaCredentials], capsys: pytest.CaptureFixture[str]
) -> None:
    write_log(tmp_path / "issued.log", [issued(0x10, T0)])
    refusal = tmp_path / "refusal.tsr"
    refusal.write_bytes(reject(FailInfo.timeNotAvailable, "no quorum"))
    assert horodate(["issued", "--data-dir", str(tmp_path), "--tsr", str(refusal)]) == 2
    assert "holds no token" in capsys.readouterr().err
    junk = tmp_path / "junk.tsr"
    junk.write_bytes(b"\x30\x03junk")
    assert horodate(["issued", "--data-dir", str(tmp_path), "--tsr", str(junk)]) == 2
    assert "junk.tsr" in capsys.readouterr().err
    assert horodate(["issued", "--data-dir", str(tmp_path), "--tsr", str(tmp_path / "none")]) == 2
