"""Bouncy Castle, the Java verifier, checks our tokens (the third of ADR 0004's verifiers).

``tests/tsa/bouncycastle/BcVerify.java`` is compiled with the JDK against Debian's Bouncy
Castle (``libbcpkix-java``) and run once over every case: ``openssl ts -query`` → our engine
→ ``TimeStampResponse.validate(request)``, ``TimeStampToken.validate(verifier)`` (signature,
ESS signing-certificate hash, critical timeStamping EKU, validity at genTime), PKIX path
validation up to the root, and the imprint against the data. Key types P-256, P-384,
RSA 2048 × SHA-256/384/512 × certReq on/off × nonce on/off, RSA 4096 once; and the controls
that show it can say no: a tampered signature, a reply checked against another request, a
refusal (parsed, with its failInfo).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.tsa import FailInfo, TimeStampAuthority
from appliance.tsa.credentials import TsaCredentials
from appliance.tsa.dev_pki import DevPki
from appliance.tsa.errors import TimeNotAvailable
from tests.tsa.conftest import POLICY_OID
from tests.tsa.test_interop import openssl_query

HERE = Path(__file__).resolve().parent
BC_JARS = [Path("/usr/share/java") / f"{name}.jar" for name in ("bcprov", "bcpkix", "bcutil")]
DATA = b"attendance: session 7, teacher T, student S, signed at 09:02\n"
MATRIX = [
    (key, hash_name, cert_req, nonce)
    for key, hash_name, cert_req, nonce in itertools.product(
        ("ec-p256", "ec-p384", "rsa-2048"), ("sha256", "sha384", "sha512"), (True, False),
        (True, False),
    )
] + [("rsa-4096", "sha256", True, True)]  # fmt: skip


@pytest.fixture(scope="module")
def bc_verify(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[str]], dict[str, str]]:
    """Compile BcVerify.java; return a function that runs it over case lines and gives each
    case's answer line by name."""
    javac, java = shutil.which("javac"), shutil.which("java")
    assert javac and java, (
        "a JDK is required (Debian package default-jdk-headless: make system-deps)"
    )
    missing = [str(jar) for jar in BC_JARS if not jar.exists()]
    assert not missing, f"Bouncy Castle is required (Debian package libbcpkix-java): {missing}"
    classes = tmp_path_factory.mktemp("bc")
    classpath = ":".join(str(jar) for jar in BC_JARS)
    source = HERE / "bouncycastle" / "BcVerify.java"
    built = subprocess.run(
        [javac, "-nowarn", "-cp", classpath, "-d", str(classes), str(source)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr

    def run(cases: list[str]) -> dict[str, str]:
        done = subprocess.run(
            [java, "-cp", f"{classes}:{classpath}", "BcVerify"],
            input="\n".join(cases) + "\n", capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        answers = {line.split()[1]: line for line in done.stdout.splitlines() if line.strip()}
        assert len(answers) == len(cases), done.stdout + done.stderr
        return answers

    return run


def case_name(key: str, hash_name: str, cert_req: bool, nonce: bool) -> str:
    return "-".join(
        (key, hash_name, "certReq" if cert_req else "noCertReq", "nonce" if nonce else "noNonce")
    )


def case(name: str, tsq: Path, tsr: Path, data: Path, pki: DevPki) -> str:
    """One line of BcVerify's input."""
    return "\t".join((name, str(tsq), str(tsr), str(data), str(pki.ca_cert), str(pki.tsa_cert)))


def serial_counter() -> Callable[[], int]:
    return itertools.count(0x1F00).__next__


def test_bouncy_castle_validates_our_tokens_and_refuses_what_it_must(
    openssl: str,
    dev_pki: Callable[[str], DevPki],
    credentials: Callable[[str], TsaCredentials],
    tmp_path: Path,
    bc_verify: Callable[[list[str]], dict[str, str]],
) -> None:
    data = tmp_path / "record.txt"
    data.write_bytes(DATA)
    cases: list[str] = []
    expected_nonce: dict[str, bool] = {}
    for key, hash_name, cert_req, nonce in MATRIX:
        name = case_name(key, hash_name, cert_req, nonce)
        tsq, tsr = tmp_path / f"{name}.tsq", tmp_path / f"{name}.tsr"
        openssl_query(openssl, data, tsq, hash_name=hash_name, cert_req=cert_req, nonce=nonce)
        tsa = TimeStampAuthority(credentials(key), policy_oid=POLICY_OID)
        reply = tsa.respond(
            tsq.read_bytes(), time=lambda: (time.time_ns(), 20_000_000), serial=serial_counter()
        )
        assert reply.granted, reply.status_text
        tsr.write_bytes(reply.der)
        pki = dev_pki(key)
        cases.append(case(name, tsq, tsr, data, pki))
        expected_nonce[name] = nonce

    # Controls: Bouncy Castle must say no to these.
    pki, creds = dev_pki("ec-p256"), credentials("ec-p256")
    good = case_name("ec-p256", "sha256", True, True)
    good_q, good_r = tmp_path / f"{good}.tsq", tmp_path / f"{good}.tsr"
    tampered = bytearray(good_r.read_bytes())
    tampered[-3] ^= 0x01  # inside the signature, the reply's last field
    (tmp_path / "tampered.tsr").write_bytes(bytes(tampered))
    cases.append(case("tampered", good_q, tmp_path / "tampered.tsr", data, pki))
    other = tmp_path / "other.txt"
    other.write_bytes(DATA + b"(edited)")
    other_q = tmp_path / "other.tsq"
    openssl_query(openssl, other, other_q, hash_name="sha256", cert_req=True, nonce=False)
    no_nonce_r = tmp_path / f"{case_name('ec-p256', 'sha256', True, False)}.tsr"
    cases.append(case("other-request", other_q, no_nonce_r, data, pki))
    cases.append(case("other-data", good_q, good_r, other, pki))

    def no_time() -> tuple[int, int]:
        raise TimeNotAvailable("no quorum")

    refusal = TimeStampAuthority(creds, policy_oid=POLICY_OID).respond(
        good_q.read_bytes(), time=no_time, serial=serial_counter()
    )
    assert refusal.fail_info is FailInfo.timeNotAvailable
    (tmp_path / "refusal.tsr").write_bytes(refusal.der)
    cases.append(case("refusal", good_q, tmp_path / "refusal.tsr", data, pki))

    answers = bc_verify(cases)
    for name, wants_nonce in expected_nonce.items():
        answer = answers[name]
        assert answer.startswith(f"OK {name} "), answer
        assert f"policy={POLICY_OID}" in answer
        assert ("nonce=null" not in answer) is wants_nonce, answer
    assert answers["tampered"].startswith("FAIL tampered"), answers["tampered"]
    assert "signature" in answers["tampered"]
    assert answers["other-request"].startswith("FAIL other-request"), answers["other-request"]
    assert "imprint" in answers["other-request"]
    assert (
        answers["other-data"]
        == "FAIL other-data Exception: the message imprint is not the data's digest"
    )
    assert answers["refusal"].startswith("REJECTED refusal status=2 failInfo=timeNotAvailable "), (
        answers["refusal"]
    )
    assert "no quorum" in answers["refusal"]
