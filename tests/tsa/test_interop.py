"""Real peers check our tokens: ``openssl ts -query`` → engine (in process) → ``openssl ts
-verify`` (with ``-queryfile`` and with ``-data``), and the ``rfc3161-client`` verifier.

Key types P-256, P-384, RSA 2048 × SHA-256/384/512 × certReq on/off × nonce on/off; RSA 4096
once. Bouncy Castle checks the same matrix in test_bouncycastle.py (one Java run for all).
The same matrix through the HTTP front is in test_http_interop.py.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    TimestampRequestBuilder,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

from appliance.tsa import FailInfo, TimeStampAuthority, reject
from appliance.tsa.credentials import TsaCredentials
from appliance.tsa.dev_pki import DevPki
from tests.tsa.conftest import POLICY_OID

DATA = b"attendance: session 42, teacher T, student S, signed\n"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def now_reading() -> tuple[int, int]:
    return time.time_ns(), 80_000_000


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n

    def next(self) -> int:  # the SerialAllocator interface the HTTP front calls
        return self()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("interop") / "record.bin"
    path.write_bytes(DATA)
    return path


def openssl_query(
    openssl: str, data_file: Path, query: Path, *, hash_name: str, cert_req: bool, nonce: bool
) -> None:
    """``openssl ts -query`` for ``data_file`` into ``query``."""
    args = [openssl, "ts", "-query", "-data", str(data_file), f"-{hash_name}", "-out", str(query)]
    args += ["-cert"] if cert_req else []
    args += [] if nonce else ["-no_nonce"]
    made = run(*args)
    assert made.returncode == 0, made.stderr


def openssl_verify(
    openssl: str, pki: DevPki, query: Path, reply: Path, data_file: Path, *, cert_req: bool
) -> None:
    """``openssl ts -verify`` of ``reply``, once against the query, once against the data."""
    # without certReq the token carries no certificate: the verifier gets it out of band
    untrusted = [] if cert_req else ["-untrusted", str(pki.tsa_cert)]
    for source in (["-queryfile", str(query)], ["-data", str(data_file)]):
        verified = run(
            openssl, "ts", "-verify", *source, "-in", str(reply),
            "-CAfile", str(pki.ca_cert), *untrusted,
        )  # fmt: skip
        assert verified.returncode == 0 and "Verification: OK" in verified.stdout, (
            verified.stdout + verified.stderr
        )


def openssl_round_trip(
    openssl: str,
    pki: DevPki,
    creds: TsaCredentials,
    work: Path,
    data_file: Path,
    *,
    hash_name: str,
    cert_req: bool,
    nonce: bool,
) -> bytes:
    query, reply_path = work / "q.tsq", work / "r.tsr"
    openssl_query(openssl, data_file, query, hash_name=hash_name, cert_req=cert_req, nonce=nonce)
    tsa = TimeStampAuthority(creds, policy_oid=POLICY_OID)
    reply = tsa.respond(query.read_bytes(), time=now_reading, serial=Counter())
    assert reply.granted, reply.status_text
    reply_path.write_bytes(reply.der)
    openssl_verify(openssl, pki, query, reply_path, data_file, cert_req=cert_req)
    return reply.der


def rfc3161_client_verify(
    der: bytes, pki: DevPki, *, cert_req: bool, nonce: int | None, data: bytes = DATA
) -> None:
    root = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    tsa_cert = x509.load_pem_x509_certificate(pki.tsa_cert.read_bytes())
    builder = VerifierBuilder(
        policy_id=x509.ObjectIdentifier(POLICY_OID), roots=[root], nonce=nonce
    )
    if not cert_req:
        builder = builder.tsa_certificate(tsa_cert)
    assert builder.build().verify_message(decode_timestamp_response(der), data)


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("cert_req", [True, False], ids=["certReq", "noCertReq"])
@pytest.mark.parametrize("nonce", [True, False], ids=["nonce", "noNonce"])
def test_openssl_and_rfc3161_client_verify_our_tokens(
    openssl: str,
    dev_pki: Callable[[str], DevPki],
    credentials: Callable[[str], TsaCredentials],
    data_file: Path,
    tmp_path: Path,
    key_type: str,
    hash_name: str,
    cert_req: bool,
    nonce: bool,
) -> None:
    pki, creds = dev_pki(key_type), credentials(key_type)
    der = openssl_round_trip(
        openssl, pki, creds, tmp_path, data_file, hash_name=hash_name, cert_req=cert_req,
        nonce=nonce,
    )  # fmt: skip
    token = decode_timestamp_response(der)
    assert (token.tst_info.nonce is not None) is nonce
    rfc3161_client_verify(der, pki, cert_req=cert_req, nonce=token.tst_info.nonce)


def test_rsa_4096_once(
    openssl: str,
    dev_pki: Callable[[str], DevPki],
    credentials: Callable[[str], TsaCredentials],
    data_file: Path,
    tmp_path: Path,
) -> None:
    pki, creds = dev_pki("rsa-4096"), credentials("rsa-4096")
    der = openssl_round_trip(
        openssl, pki, creds, tmp_path, data_file, hash_name="sha256", cert_req=True, nonce=True
    )
    rfc3161_client_verify(
        der, pki, cert_req=True, nonce=decode_timestamp_response(der).tst_info.nonce
    )


@pytest.mark.parametrize("algorithm", [HashAlgorithm.SHA256, HashAlgorithm.SHA512])
@pytest.mark.parametrize("cert_req", [True, False])
@pytest.mark.parametrize("nonce", [True, False])
def test_rfc3161_client_request_to_verifier_from_request(
    tsa_keys: DevPki,
    credentials: Callable[[str], TsaCredentials],
    algorithm: HashAlgorithm,
    cert_req: bool,
    nonce: bool,
) -> None:
    request = (
        TimestampRequestBuilder()
        .data(DATA)
        .hash_algorithm(algorithm)
        .nonce(nonce=nonce)
        .cert_request(cert_request=cert_req)
        .build()
    )
    tsa = TimeStampAuthority(credentials("ec-p256"), policy_oid=POLICY_OID)
    reply = tsa.respond(request.as_bytes(), time=now_reading, serial=Counter())
    assert reply.granted
    builder = VerifierBuilder.from_request(request).add_root_certificate(
        x509.load_pem_x509_certificate(tsa_keys.ca_cert.read_bytes())
    )
    if not cert_req:
        builder = builder.tsa_certificate(
            x509.load_pem_x509_certificate(tsa_keys.tsa_cert.read_bytes())
        )
    verifier = builder.build()
    response = decode_timestamp_response(reply.der)
    assert verifier.verify_message(response, DATA)
    with pytest.raises(VerificationError):  # the verifier does check the imprint
        verifier.verify_message(response, DATA + b"tampered")


def test_openssl_rejects_a_token_for_other_data(
    openssl: str, tsa_keys: DevPki, credentials: Callable[[str], TsaCredentials], tmp_path: Path,
    data_file: Path,
) -> None:  # fmt: skip
    """Negative control: the openssl check above can fail."""
    openssl_round_trip(
        openssl, tsa_keys, credentials("ec-p256"), tmp_path, data_file,
        hash_name="sha256", cert_req=True, nonce=True,
    )  # fmt: skip
    other = tmp_path / "other.bin"
    other.write_bytes(DATA + b"x")
    result = run(
        openssl, "ts", "-verify", "-data", str(other), "-in", str(tmp_path / "r.tsr"),
        "-CAfile", str(tsa_keys.ca_cert),
    )  # fmt: skip
    assert result.returncode != 0 and "message imprint mismatch" in result.stderr


@pytest.mark.parametrize(
    ("fail_info", "openssl_text"),
    [
        (FailInfo.badAlg, "unrecognized or unsupported algorithm identifier"),
        (FailInfo.badDataFormat, "the data submitted has the wrong format"),
        (FailInfo.timeNotAvailable, "the TSA's time source is not available"),
        (FailInfo.unacceptedPolicy, "the requested TSA policy is not supported by the TSA"),
        (FailInfo.systemFailure, "the request cannot be handled due to system failure"),
    ],
)
def test_openssl_reads_our_rejections(
    openssl: str, tmp_path: Path, fail_info: FailInfo, openssl_text: str
) -> None:
    path = tmp_path / "rejection.tsr"
    path.write_bytes(reject(fail_info, "only 1 of 2 sources agree"))
    shown = run(openssl, "ts", "-reply", "-in", str(path), "-text")
    assert shown.returncode == 0, shown.stderr
    assert "Status: Rejected." in shown.stdout
    assert "Status description: only 1 of 2 sources agree" in shown.stdout
    assert openssl_text in shown.stdout
    assert decode_timestamp_response(path.read_bytes()).status == 2


def test_structure_matches_openssl_own_tsa(
    openssl: str, tsa_keys: DevPki, credentials: Callable[[str], TsaCredentials], tmp_path: Path,
    data_file: Path,
) -> None:  # fmt: skip
    """``openssl ts -reply`` signs the same request with the same key: the two tokens must
    have the same shape (OpenSSL as a reference implementation of RFC 3161)."""
    from tests.tsa.reference_builder import parse_response

    (tmp_path / "serial").write_text("01\n")
    config = tmp_path / "tsa.cnf"
    config.write_text(
        "[ tsa ]\ndefault_tsa = horodate\n[ horodate ]\n"
        f"serial = {tmp_path / 'serial'}\ncrypto_device = builtin\n"
        f"signer_cert = {tsa_keys.tsa_cert}\nsigner_key = {tsa_keys.tsa_key}\n"
        f"signer_digest = sha256\ndefault_policy = {POLICY_OID}\n"
        "digests = sha256, sha384, sha512\naccuracy = secs:0, millisecs:81, microsecs:0\n"
        "clock_precision_digits = 3\nordering = no\ntsa_name = yes\n"
        "ess_cert_id_chain = no\ness_cert_id_alg = sha256\n"
    )
    query = tmp_path / "q.tsq"
    assert run(openssl, "ts", "-query", "-data", str(data_file), "-sha256", "-cert",
               "-out", str(query)).returncode == 0  # fmt: skip
    made = run(openssl, "ts", "-reply", "-config", str(config), "-queryfile", str(query),
               "-out", str(tmp_path / "openssl.tsr"))  # fmt: skip
    assert made.returncode == 0, made.stderr
    tsa = TimeStampAuthority(credentials("ec-p256"), policy_oid=POLICY_OID)
    ours = tsa.respond(query.read_bytes(), time=now_reading, serial=Counter()).der

    def shape(der: bytes) -> dict[str, object]:
        sd = parse_response(der)["time_stamp_token"]["content"]
        si = sd["signer_infos"][0]
        tst = sd["encap_content_info"]["content"].parsed
        return {
            "sd_version": sd["version"].native,
            "content_type": sd["encap_content_info"]["content_type"].native,
            "digest_algorithms": [a["algorithm"].native for a in sd["digest_algorithms"]],
            "n_certificates": len(sd["certificates"]),
            "n_signers": len(sd["signer_infos"]),
            "si_version": si["version"].native,
            "sid": si["sid"].name,
            "sid_value": si["sid"].chosen.dump(),
            "signature_algorithm": si["signature_algorithm"]["algorithm"].native,
            # OpenSSL adds signingTime; we do not (ADR 0004), and we add the v1 ESS id
            "attributes": {a["type"].native for a in si["signed_attrs"]}
            - {"signing_time", "signing_certificate"},
            "tst_fields": sorted(k for k, v in tst.native.items() if v not in (None, False)),
            "imprint": tst["message_imprint"].dump(),
            "nonce": tst["nonce"].native,
            "tsa": tst["tsa"].dump(),
            "policy": tst["policy"].native,
            "accuracy_millis": tst["accuracy"]["millis"].native,
        }

    assert shape(ours) == shape((tmp_path / "openssl.tsr").read_bytes())
