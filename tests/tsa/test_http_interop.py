"""The interop matrix through the appliance's HTTP front: ``openssl ts -query`` → ``POST
/tsa`` (served as in production: the fast lane on a real socket) → ``openssl ts -verify``
with ``-queryfile`` and ``-data``, and the ``rfc3161-client`` verifier on the same reply.

Key types P-256, P-384, RSA 2048 × SHA-256/384/512 × certReq on/off × nonce on/off. The
clock is a real ensemble fed with agreeing samples on a virtual clock. Then requests built
by rfc3161-client itself, verified with ``VerifierBuilder.from_request``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    TimestampRequestBuilder,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

from appliance.clock import Policy
from appliance.clock.timekeeper import Timekeeper
from appliance.http.app import create_app
from appliance.http.app_keys import ServerConfig
from appliance.issuance.issuer import TsaService
from appliance.tsa import TimeStampAuthority
from appliance.tsa.credentials import TsaCredentials
from appliance.tsa.dev_pki import DevPki
from appliance.tsa.request import parse_request
from tests.appliance.conftest import (  # noqa: F401 - the serve fixture
    VirtualClock,
    feed_agreeing_sources,
    serve,
)
from tests.tsa.conftest import POLICY_OID
from tests.tsa.test_interop import Counter, openssl_query, openssl_verify

DATA = b"roll call 2026-11-28 09:00, establishment 0750001A, signed by teacher T-017\n"


async def appliance_front(serve: Any, creds: TsaCredentials) -> Any:  # noqa: F811
    """The appliance's HTTP front on a synchronised clock, with this TSA key (no log)."""
    clock = VirtualClock()
    timekeeper = Timekeeper(Policy(), clock=clock)
    feed_agreeing_sources(timekeeper, clock)
    service = TsaService(
        authority=TimeStampAuthority(creds, policy_oid=POLICY_OID),
        serials=Counter(),
        issuance_log=None,
        chain_pem=creds.chain_pem(),
    )
    return await serve(create_app(ServerConfig(), timekeeper, tsa=service))


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("cert_req", [True, False], ids=["certReq", "noCertReq"])
@pytest.mark.parametrize("nonce", [True, False], ids=["nonce", "noNonce"])
async def test_openssl_query_post_tsa_openssl_and_rfc3161_client_verify(
    serve: Any,  # noqa: F811
    openssl: str,
    dev_pki: Callable[[str], DevPki],
    credentials: Callable[[str], TsaCredentials],
    tmp_path: Path,
    key_type: str,
    hash_name: str,
    cert_req: bool,
    nonce: bool,
) -> None:
    client = await appliance_front(serve, credentials(key_type))
    pki = dev_pki(key_type)

    data, query, reply = tmp_path / "record.txt", tmp_path / "q.tsq", tmp_path / "r.tsr"
    data.write_bytes(DATA)
    openssl_query(openssl, data, query, hash_name=hash_name, cert_req=cert_req, nonce=nonce)
    resp = await client.post(
        "/tsa", data=query.read_bytes(), headers={"Content-Type": "application/timestamp-query"}
    )
    assert resp.status == 200 and resp.content_type == "application/timestamp-reply"
    assert resp.headers["Server"] == "Horodate"  # the fast lane's answer
    reply.write_bytes(await resp.read())

    openssl_verify(openssl, pki, query, reply, data, cert_req=cert_req)

    # rfc3161-client on the same reply, told the nonce the openssl request carried.
    sent = parse_request(query.read_bytes())
    builder = VerifierBuilder(
        policy_id=x509.ObjectIdentifier(POLICY_OID),
        roots=[x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())],
        nonce=sent.nonce,
    )
    if not cert_req:
        builder = builder.tsa_certificate(x509.load_pem_x509_certificate(pki.tsa_cert.read_bytes()))
    assert builder.build().verify_message(decode_timestamp_response(reply.read_bytes()), DATA)


@pytest.mark.parametrize("algorithm", [HashAlgorithm.SHA256, HashAlgorithm.SHA512])
@pytest.mark.parametrize("cert_req", [True, False], ids=["certReq", "noCertReq"])
@pytest.mark.parametrize("nonce", [True, False], ids=["nonce", "noNonce"])
async def test_rfc3161_client_request_post_tsa_verifier_from_request(
    serve: Any,  # noqa: F811
    dev_pki: Callable[[str], DevPki],
    credentials: Callable[[str], TsaCredentials],
    algorithm: HashAlgorithm,
    cert_req: bool,
    nonce: bool,
) -> None:
    client = await appliance_front(serve, credentials("ec-p256"))
    pki = dev_pki("ec-p256")
    request = (
        TimestampRequestBuilder()
        .data(DATA)
        .hash_algorithm(algorithm)
        .nonce(nonce=nonce)
        .cert_request(cert_request=cert_req)
        .build()
    )
    resp = await client.post(
        "/tsa",
        data=request.as_bytes(),
        headers={"Content-Type": "application/timestamp-query"},
    )
    response = decode_timestamp_response(await resp.read())
    builder = VerifierBuilder.from_request(request).add_root_certificate(
        x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    )
    if not cert_req:
        builder = builder.tsa_certificate(x509.load_pem_x509_certificate(pki.tsa_cert.read_bytes()))
    verifier = builder.build()
    assert verifier.verify_message(response, DATA)
    with pytest.raises(VerificationError):
        verifier.verify_message(response, DATA + b" (edited)")
