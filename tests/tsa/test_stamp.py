"""``horodate stamp`` and ``horodate verify`` against a real TSA over HTTP.

The TSA is ``openssl ts -reply`` behind a small aiohttp server on 127.0.0.1 (see
``_support_client``): an implementation that shares nothing with the appliance.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from horodate.cli import main
from tests.tsa._support_client import (
    OTHER_POLICY,
    POLICY,
    UNACCEPTED_POLICY,
    OpensslTsaServer,
    Pki,
    openssl_tsa,
)
from timestamping import parse_reply

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpensslTsaServer, Pki]]:
    with openssl_tsa(tmp_path_factory.mktemp("openssl-tsa-http")) as server_pki:
        yield server_pki


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "sign-off.csv"
    path.write_bytes(b"session,teacher,student,signed\n2026-11-28 B12,T042,S1337,yes\n")
    return path


def test_stamp_then_verify_with_both_verifiers(
    tsa: tuple[OpensslTsaServer, Pki], document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, pki = tsa
    out = document.with_name("sign-off.csv.tsr")
    rc = main(["stamp", str(document), "--tsa", f"{server.url}/tsa", "-o", str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    info = parse_reply(out.read_bytes()).info
    assert info is not None
    assert f"serial:   {info.serial:#x}" in printed.out
    assert "genTime:" in printed.out and info.gen_time_text in printed.out
    assert "accuracy: ±1.5001 s" in printed.out
    assert f"policy:   {POLICY}" in printed.out

    rc = main(["verify", str(document), str(out), "--ca", str(pki.root_pem), "--openssl"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "TSA:      CN=Horodate Test TSA,O=Horodate test PKI,C=FR" in printed.out
    assert f"serial:   {info.serial:#x}" in printed.out
    assert "openssl ts -verify: Verification: OK" in printed.out


@pytest.mark.parametrize("hash_name", ["sha384", "sha512"])
def test_stamp_other_hashes_policy_and_no_cert_req(
    tsa: tuple[OpensslTsaServer, Pki], document: Path, hash_name: str
) -> None:
    server, pki = tsa
    out = document.with_suffix(f".{hash_name}.tsr")
    argv = ["stamp", str(document), "--tsa", f"{server.url}/tsa", "-o", str(out)]
    argv += ["--hash", hash_name, "--no-cert-req", "--policy", OTHER_POLICY]
    assert main(argv) == 0
    reply = parse_reply(out.read_bytes())
    assert reply.info is not None and reply.info.policy_oid == OTHER_POLICY
    assert reply.certificates == ()
    # Without the TSA certificate in the token, the root alone is not enough…
    assert main(["verify", str(document), str(out), "--ca", str(pki.root_pem)]) == 1
    # …the bundle root + TSA certificate is, for both verifiers.
    argv = ["verify", str(document), str(out), "--ca", str(pki.bundle_pem), "--openssl"]
    assert main(argv) == 0
    argv = ["verify", str(document), str(out), "--ca", str(pki.bundle_pem), "--policy", POLICY]
    assert main(argv) == 1


def test_stamp_can_verify_before_saving(
    tsa: tuple[OpensslTsaServer, Pki], document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, pki = tsa
    argv = ["stamp", str(document), "--tsa", f"{server.url}/tsa", "--ca", str(pki.root_pem)]
    assert main(argv) == 0
    assert "verified against" in capsys.readouterr().out
    assert document.with_name(document.name + ".tsr").exists()  # default output name
    out = document.with_name("other.tsr")
    argv = ["stamp", str(document), "--tsa", f"{server.url}/tsa", "-o", str(out)]
    assert main([*argv, "--ca", str(pki.other_root_pem)]) == 1
    assert not out.exists(), "a token that does not verify is not saved"


def test_tampered_data_fails_verify(
    tsa: tuple[OpensslTsaServer, Pki], document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, pki = tsa
    out = document.with_name("t.tsr")
    assert main(["stamp", str(document), "--tsa", f"{server.url}/tsa", "-o", str(out)]) == 0
    document.write_bytes(document.read_bytes().replace(b"yes", b"no!"))
    capsys.readouterr()
    rc = main(["verify", str(document), str(out), "--ca", str(pki.root_pem)])
    assert rc == 1
    assert "NOT VERIFIED" in capsys.readouterr().err
    rc = main(["verify", str(document), str(out), "--ca", str(pki.root_pem), "--openssl"])
    assert rc == 1


def test_wrong_ca_fails_verify(
    tsa: tuple[OpensslTsaServer, Pki], document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, pki = tsa
    out = document.with_name("w.tsr")
    assert main(["stamp", str(document), "--tsa", f"{server.url}/tsa", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["verify", str(document), str(out), "--ca", str(pki.other_root_pem)]) == 1
    assert "does not verify against the given CA" in capsys.readouterr().err


def test_rejection_exits_non_zero_with_fail_info_in_words(
    tsa: tuple[OpensslTsaServer, Pki], document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = tsa
    out = document.with_name("r.tsr")
    argv = ["stamp", str(document), "--tsa", f"{server.url}/tsa", "-o", str(out)]
    rc = main([*argv, "--policy", UNACCEPTED_POLICY])
    err = capsys.readouterr().err
    assert rc == 1
    assert "rejected" in err
    assert "unacceptedPolicy (the requested policy is not supported by the TSA)" in err
    assert not out.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_tsa_unreachable_is_a_clear_error(
    document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{_free_port()}/tsa"  # nothing listens there any more
    rc = main(["stamp", str(document), "--tsa", url])
    err = capsys.readouterr().err
    assert rc == 3
    assert f"cannot reach the TSA at {url}" in err and "Connection refused" in err
    assert "Traceback" not in err


def test_tsa_too_slow_times_out(
    tsa: tuple[OpensslTsaServer, Pki], document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = tsa
    t0 = time.monotonic()
    rc = main(["stamp", str(document), "--tsa", f"{server.url}/slow", "--timeout-s", "0.5"])
    assert rc == 3
    assert time.monotonic() - t0 < 4
    assert "did not answer within 0.5 s" in capsys.readouterr().err


def test_oversized_reply_refused(
    tsa: tuple[OpensslTsaServer, Pki], document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = tsa
    out = document.with_name("h.tsr")
    rc = main(["stamp", str(document), "--tsa", f"{server.url}/huge", "-o", str(out)])
    assert rc == 3
    assert "exceeds 1048576 bytes; refused" in capsys.readouterr().err
    assert not out.exists()


def test_not_a_timestamp_reply_refused(
    tsa: tuple[OpensslTsaServer, Pki], document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = tsa
    rc = main(["stamp", str(document), "--tsa", f"{server.url}/html"])
    assert rc == 3
    assert "did not answer with a time-stamp reply (Content-Type: text/html)" in (
        capsys.readouterr().err
    )
    rc = main(["stamp", str(document), "--tsa", f"{server.url}/no-such-path"])
    assert rc == 3
    assert "HTTP 404" in capsys.readouterr().err


def test_bad_input_is_a_clear_error(
    tsa: tuple[OpensslTsaServer, Pki], document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, pki = tsa
    missing = document.with_name("missing.csv")
    assert main(["stamp", str(missing), "--tsa", f"{server.url}/tsa"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["stamp", str(document), "--tsa", "ftp://example.org/tsa"]) == 2
    assert "not an http:// or https:// URL" in capsys.readouterr().err
    assert main(["stamp", str(document), "--tsa", f"{server.url}/tsa", "--policy", "x"]) == 2
    # An existing token is never overwritten unless asked.
    out = document.with_name("keep.tsr")
    out.write_bytes(b"precious")
    assert main(["stamp", str(document), "--tsa", f"{server.url}/tsa", "-o", str(out)]) == 2
    assert out.read_bytes() == b"precious"
    argv = ["stamp", str(document), "--tsa", f"{server.url}/tsa", "-o", str(out), "--force"]
    assert main(argv) == 0
    # verify: a .tsr that is not a reply, a CA file that is not PEM.
    junk = document.with_name("junk.tsr")
    junk.write_bytes(b"\x30\x03\x02\x01\x00")
    assert main(["verify", str(document), str(junk), "--ca", str(pki.root_pem)]) == 2
    assert "not a valid RFC 3161 TimeStampResp" in capsys.readouterr().err
    assert main(["verify", str(document), str(out), "--ca", str(document)]) == 2
    assert "no readable PEM certificate" in capsys.readouterr().err


def test_real_processes_exit_codes(tsa: tuple[OpensslTsaServer, Pki], document: Path) -> None:
    """The console command as a user runs it: a separate process, no traceback."""
    server, pki = tsa
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = document.with_name("p.tsr")

    def horodate(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "horodate", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=REPO,
            check=False,
        )

    r = horodate("stamp", str(document), "--tsa", f"{server.url}/tsa", "-o", str(out))
    assert r.returncode == 0, r.stderr
    r = horodate("verify", str(document), str(out), "--ca", str(pki.root_pem), "--openssl")
    assert r.returncode == 0, r.stderr
    document.write_bytes(b"something else")
    r = horodate("verify", str(document), str(out), "--ca", str(pki.root_pem))
    assert r.returncode == 1
    assert "NOT VERIFIED" in r.stderr and "Traceback" not in r.stderr
