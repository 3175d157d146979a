"""Test-only builders: the slow reference token, and genTime formatted the obvious way.

* :func:`reference_response` builds a token the obvious way, through asn1crypto objects.
  It is ~100x slower than :mod:`appliance.tsa.engine`'s template path, and exists so the
  tests can require the fast path to produce the very same bytes.
* :func:`parse_response` reads any ``TimeStampResp`` back with asn1crypto (the
  specification with the token OPTIONAL is ``timestamping.reply``'s).
* :func:`format_gen_time` writes genTime as RFC 3161 §2.4.2 says, for the engine's
  hand-encoded genTime to be compared with.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from typing import Any

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.tsa.credentials import TsaCredentials
from appliance.tsa.errors import TsaError
from timestamping.reply import _resp_spec

# RFC 3161 §2.4.2's TimeStampResp, token OPTIONAL (asn1crypto's has it mandatory)
TimeStampResp = _resp_spec()


def parse_response(data: bytes) -> Any:
    """Parse a DER ``TimeStampResp`` (strictly: no trailing bytes); raise :class:`TsaError`."""
    try:
        resp = TimeStampResp.load(data, strict=True)
        # asn1crypto parses lazily: force the parts a verifier reads, so malformed ones fail
        # here (not the certificates: their full parse costs ~0.1 s)
        resp["status"].native  # noqa: B018
        token = resp["time_stamp_token"]
        if not isinstance(token, core.Void):
            signed_data = token["content"]
            signed_data["encap_content_info"]["content"].parsed.native  # noqa: B018
            signed_data["signer_infos"].native  # noqa: B018
    except (ValueError, TypeError, KeyError) as e:
        raise TsaError(f"not a DER TimeStampResp: {e}") from e
    return resp


def reference_response(
    credentials: TsaCredentials,
    request_der: bytes,
    *,
    policy: str,
    serial: int,
    gen_time: dt.datetime,
    accuracy_us: int,
    digest: str,
    signature_algorithm: str,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """The token the engine must produce, built with asn1crypto (the slow, obvious way).

    ``digest`` is the SignerInfo digest algorithm (``sha256``/``sha384``),
    ``signature_algorithm`` an asn1crypto name (``sha256_ecdsa``, ``sha384_ecdsa``,
    ``sha256_rsa``), ``sign`` signs the DER of the signed attributes.
    """
    request = tsp.TimeStampReq.load(request_der)
    cert_der = credentials.certificate.public_bytes(Encoding.DER)
    cert = asn1_x509.Certificate.load(cert_der)
    seconds, rest = divmod(accuracy_us, 1_000_000)
    millis, micros = divmod(rest, 1_000)
    accuracy = {
        k: v for k, v in (("seconds", seconds), ("millis", millis), ("micros", micros)) if v
    }
    tst_fields: dict[str, Any] = {
        "version": "v1",
        "policy": policy,
        "message_imprint": request["message_imprint"],
        "serial_number": serial,
        "gen_time": gen_time,
        "accuracy": accuracy,
        "tsa": asn1_x509.GeneralName(name="directory_name", value=cert.subject),
    }
    if request["nonce"].native is not None:
        tst_fields["nonce"] = request["nonce"].native
    tst_info = tsp.TSTInfo(tst_fields)
    tst_der = tst_info.dump()

    issuer_serial = {
        "issuer": [asn1_x509.GeneralName(name="directory_name", value=cert.issuer)],
        "serial_number": cert.serial_number,
    }
    # asn1crypto forces NULL parameters into digest AlgorithmIdentifiers; RFC 5754 §2 says
    # "MUST generate SHA2 AlgorithmIdentifiers with absent parameters": load one without.
    digest_oid = algos.DigestAlgorithmId(digest).dump()
    digest_algorithm = algos.DigestAlgorithm.load(bytes([0x30, len(digest_oid)]) + digest_oid)
    signed_attrs = cms.CMSAttributes(
        [
            {"type": "content_type", "values": ["tst_info"]},
            {"type": "message_digest", "values": [hashlib.new(digest, tst_der).digest()]},
            {
                "type": "signing_certificate",
                "values": [
                    {
                        "certs": [
                            {
                                "cert_hash": hashlib.sha1(cert_der).digest(),
                                "issuer_serial": issuer_serial,
                            }
                        ]
                    }
                ],
            },
            {
                "type": "signing_certificate_v2",
                "values": [
                    {
                        "certs": [
                            {
                                "cert_hash": hashlib.sha256(cert_der).digest(),
                                "issuer_serial": issuer_serial,
                            }
                        ]
                    }
                ],
            },
        ]
    )
    signature = sign(signed_attrs.dump())  # RFC 5652 §5.4: the DER SET OF, tag 0x31
    sig_alg: dict[str, Any] = {"algorithm": signature_algorithm}
    if signature_algorithm.endswith("_rsa"):
        sig_alg["parameters"] = core.Null()
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                name="issuer_and_serial_number",
                value={"issuer": cert.issuer, "serial_number": cert.serial_number},
            ),
            "digest_algorithm": digest_algorithm,
            "signed_attrs": signed_attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm(sig_alg),
            "signature": signature,
        }
    )
    signed_data: dict[str, Any] = {
        "version": "v3",
        "digest_algorithms": [digest_algorithm],
        "encap_content_info": {
            "content_type": "tst_info",
            "content": core.ParsableOctetString(tst_der),
        },
        "signer_infos": [signer_info],
    }
    if request["cert_req"].native:
        chain = [c for c in credentials.chain if c.issuer != c.subject]
        signed_data["certificates"] = [cert] + [
            asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in chain
        ]
    response = TimeStampResp(
        {
            "status": {"status": "granted"},
            "time_stamp_token": {
                "content_type": "signed_data",
                "content": cms.SignedData(signed_data),
            },
        }
    )
    return bytes(response.dump())


def format_gen_time(gen_ns: int, unit_ns: int) -> bytes:
    """GeneralizedTime content per RFC 3161 §2.4.2: "Z", no trailing zeros, no bare ".".

    ``gen_ns`` must be a multiple of ``unit_ns``."""
    sec, frac_ns = divmod(gen_ns, 1_000_000_000)
    text = time.strftime("%Y%m%d%H%M%S", time.gmtime(sec))
    if frac_ns:
        digits = 9 - len(str(unit_ns)) + 1
        text += "." + f"{frac_ns // unit_ns:0{digits}d}".rstrip("0")
    return (text + "Z").encode("ascii")
