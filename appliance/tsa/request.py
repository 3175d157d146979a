"""Parse and validate an RFC 3161 ``TimeStampReq`` (strict DER, hand-written, never raises
anything but :class:`~appliance.tsa.errors.RequestRejected`).

RFC 3161 §2.4.1::

    TimeStampReq ::= SEQUENCE  {
       version                      INTEGER  { v1(1) },
       messageImprint               MessageImprint,
       reqPolicy                    TSAPolicyId              OPTIONAL,
       nonce                        INTEGER                  OPTIONAL,
       certReq                      BOOLEAN                  DEFAULT FALSE,
       extensions               [0] IMPLICIT Extensions      OPTIONAL  }

    MessageImprint ::= SEQUENCE  {
       hashAlgorithm                AlgorithmIdentifier,
       hashedMessage                OCTET STRING  }

What is refused, and with which ``PKIFailureInfo``:

* not strict DER, trailing bytes, wrong shape, larger than ``MAX_REQUEST_BYTES``, or a
  digest whose length does not match its algorithm → ``badDataFormat``;
* a hash algorithm other than SHA-256/384/512 (SHA-1, MD5, anything unknown), or SHA-2
  parameters other than absent/NULL → ``badAlg``;
* version other than 1, a nonce longer than ``NONCE_MAX_BYTES`` → ``badRequest``.

Policy and extensions depend on the TSA's configuration and are checked by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.tsa import der
from appliance.tsa.errors import FailInfo, RequestRejected

__all__ = [
    "HASH_ALGORITHMS",
    "MAX_REQUEST_BYTES",
    "NONCE_MAX_BYTES",
    "HashAlgorithm",
    "TimeStampRequest",
    "parse_request",
]

MAX_REQUEST_BYTES = 16 * 1024  # a real request is ~60-110 bytes; extensions add a little
NONCE_MAX_BYTES = 64  # clients send 8 (OpenSSL, rfc3161-client, Bouncy Castle)
_MAX_EXTENSIONS = 32
_CERT_REQ_TRUE = b"\x01\x01\xff"


@dataclass(frozen=True, slots=True)
class HashAlgorithm:
    name: str  # as hashlib and cryptography spell it
    oid: str
    digest_bytes: int


# Accepted message-imprint algorithms (RFC 5754 §2 for the OIDs).
HASH_ALGORITHMS: dict[str, HashAlgorithm] = {
    a.oid: a
    for a in (
        HashAlgorithm("sha256", "2.16.840.1.101.3.4.2.1", 32),
        HashAlgorithm("sha384", "2.16.840.1.101.3.4.2.2", 48),
        HashAlgorithm("sha512", "2.16.840.1.101.3.4.2.3", 64),
    )
}


def _imprint_header(alg: HashAlgorithm, params: bytes) -> bytes:
    """DER of ``MessageImprint`` up to the digest value (RFC 3161 §2.4.1)."""
    oid = der.encode_oid(alg.oid)
    alg_id = der.tlv(der.SEQUENCE, oid + params)
    digest_hdr = der.header(der.OCTET_STRING, alg.digest_bytes)
    body_len = len(alg_id) + len(digest_hdr) + alg.digest_bytes
    return der.header(der.SEQUENCE, body_len) + alg_id + digest_hdr


# header bytes -> (algorithm, header length, parameters tag)
_FAST_IMPRINT_HEADERS: dict[bytes, tuple[HashAlgorithm, int, int | None]] = {}
for _alg in HASH_ALGORITHMS.values():
    for _params, _tag in ((b"\x05\x00", der.NULL), (b"", None)):
        _h = _imprint_header(_alg, _params)
        _FAST_IMPRINT_HEADERS[_h] = (_alg, len(_h), _tag)

# Known but refused, named in the refusal so the client's operator sees why.
_REFUSED_ALGORITHMS = {
    "1.3.14.3.2.26": "SHA-1",
    "1.2.840.113549.2.5": "MD5",
    "1.2.840.113549.2.2": "MD2",
    "2.16.840.1.101.3.4.2.4": "SHA-224",
    "2.16.840.1.101.3.4.2.5": "SHA-512/224",
    "2.16.840.1.101.3.4.2.6": "SHA-512/256",
    "1.3.36.3.2.1": "RIPEMD-160",
}


@dataclass(slots=True, kw_only=True)
class TimeStampRequest:
    """A well-formed request with an accepted hash algorithm (policy/extensions unchecked).

    Not frozen: one is made per request, and a frozen dataclass's ``__init__`` sets each
    field through ``object.__setattr__``, several times the cost (benchmarks/RESULTS.md).
    Treat it as read-only."""

    hash_alg: HashAlgorithm
    imprint: bytes  # the hashedMessage
    imprint_der: bytes  # the whole MessageImprint TLV, echoed verbatim in TSTInfo (§2.4.2)
    policy: str | None  # reqPolicy, dotted
    nonce: int | None
    nonce_der: bytes | None  # the nonce INTEGER TLV, echoed verbatim
    cert_req: bool
    extensions: tuple[str, ...]  # extension OIDs, in request order


def _bad(text: str) -> RequestRejected:
    return RequestRejected(FailInfo.badDataFormat, text)


def parse_request(data: bytes) -> TimeStampRequest:
    """Parse ``data`` as a DER ``TimeStampReq``; raise :class:`RequestRejected` otherwise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RequestRejected(FailInfo.badRequest, "request is not bytes")
    buf = bytes(data)
    if len(buf) > MAX_REQUEST_BYTES:
        raise _bad(f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        return _parse(buf)
    except der.DerError as e:
        raise _bad(f"not a DER TimeStampReq: {e}") from e


def _parse(buf: bytes) -> TimeStampRequest:
    end = len(buf)
    if 2 <= end < 0x82 and buf[0] == der.SEQUENCE and buf[1] == end - 2:  # short form, exact
        start, stop = 2, end
    else:
        start, stop = der.expect(buf, 0, end, der.SEQUENCE, "TimeStampReq")
        if stop != end:
            raise der.DerError("trailing bytes after the TimeStampReq")

    # version
    if buf.startswith(b"\x02\x01\x01", start):  # the usual case, v1
        version, pos = 1, start + 3
    else:
        v0, v1 = der.expect(buf, start, stop, der.INTEGER, "version")
        version = der.read_integer(buf, v0, v1, "version")
        pos = v1

    # messageImprint: first try the exact DER headers of the accepted algorithms (what every
    # client sends); anything else goes through the general reader.
    params: int | None = None  # tag of the parameters, if any
    mi_pos = pos
    fast = _FAST_IMPRINT_HEADERS.get(buf[pos : pos + 19]) or _FAST_IMPRINT_HEADERS.get(
        buf[pos : pos + 17]
    )
    if fast is not None and stop - pos >= fast[1] + fast[0].digest_bytes:
        fast_alg, header_len, params = fast
        alg_oid = fast_alg.oid
        h0 = pos + header_len
        m1 = h1 = h0 + fast_alg.digest_bytes
    else:
        m0, m1 = der.expect(buf, pos, stop, der.SEQUENCE, "messageImprint")
        a0, a1 = der.expect(buf, m0, m1, der.SEQUENCE, "hashAlgorithm")
        o0, o1 = der.expect(buf, a0, a1, der.OID, "hashAlgorithm.algorithm")
        alg_oid = der.read_oid(buf, o0, o1, "hashAlgorithm.algorithm")
        if o1 < a1:
            params, p0, p1 = der.read_tlv(buf, o1, a1)
            if p1 != a1:
                raise der.DerError("hashAlgorithm: bytes after the parameters")
            if params == der.NULL:
                der.read_null(p0, p1, "hashAlgorithm.parameters")
        h0, h1 = der.expect(buf, a1, m1, der.OCTET_STRING, "hashedMessage")
        if h1 != m1:
            raise der.DerError("messageImprint: bytes after hashedMessage")
    imprint_der = buf[mi_pos:m1]
    imprint = buf[h0:h1]
    pos = m1

    # optional fields, in order (X.690: a SEQUENCE's components appear in definition order)
    policy: str | None = None
    nonce: int | None = None
    nonce_der: bytes | None = None
    cert_req = False
    extensions: tuple[str, ...] = ()
    order = 0
    # What clients send after the imprint: a short nonce, then certReq TRUE. Read those
    # directly; anything else (and anything after them) goes through the general loop.
    if pos + 2 < stop and buf[pos] == der.INTEGER and 0 < buf[pos + 1] <= NONCE_MAX_BYTES:
        c1 = pos + 2 + buf[pos + 1]
        if c1 <= stop:
            nonce = der.read_integer(buf, pos + 2, c1, "nonce")
            nonce_der = buf[pos:c1]
            pos, order = c1, 2
    if buf.startswith(_CERT_REQ_TRUE, pos) and pos + 3 <= stop:
        cert_req = True
        pos, order = pos + 3, 3
    while pos < stop:
        tag, c0, c1 = der.read_tlv(buf, pos, stop)
        if tag == der.OID and order < 1:
            policy = der.read_oid(buf, c0, c1, "reqPolicy")
            order = 1
        elif tag == der.INTEGER and order < 2:
            nonce = der.read_integer(buf, c0, c1, "nonce")
            nonce_der = buf[pos:c1]
            if c1 - c0 > NONCE_MAX_BYTES:
                raise RequestRejected(
                    FailInfo.badRequest, f"nonce longer than {NONCE_MAX_BYTES} bytes"
                )
            order = 2
        elif tag == der.BOOLEAN and order < 3:
            cert_req = der.read_boolean(buf, c0, c1, "certReq")
            if not cert_req:
                # X.690 §11.5: a DEFAULT value is never encoded in DER
                raise der.DerError("certReq FALSE encoded explicitly (DEFAULT FALSE)")
            order = 3
        elif tag == 0xA0 and order < 4:
            extensions = _read_extensions(buf, c0, c1)
            order = 4
        else:
            raise der.DerError(f"unexpected or out-of-order field with tag 0x{tag:02x}")
        pos = c1

    # Semantic checks, after the whole structure proved well-formed.
    if version != 1:
        raise RequestRejected(FailInfo.badRequest, f"unsupported request version {version}")
    alg = HASH_ALGORITHMS.get(alg_oid)
    if alg is None:
        name = _REFUSED_ALGORITHMS.get(alg_oid, alg_oid)
        raise RequestRejected(
            FailInfo.badAlg, f"hash algorithm {name} not accepted (SHA-256, SHA-384, SHA-512)"
        )
    if params not in (None, der.NULL):
        # RFC 5754 §2: SHA-2 parameters are absent (or NULL, from older encoders)
        raise RequestRejected(FailInfo.badAlg, f"unexpected parameters for {alg.name}")
    if len(imprint) != alg.digest_bytes:
        raise RequestRejected(
            FailInfo.badDataFormat,
            f"{alg.name} digest must be {alg.digest_bytes} bytes, got {len(imprint)}",
        )
    return TimeStampRequest(
        hash_alg=alg,
        imprint=imprint,
        imprint_der=imprint_der,
        policy=policy,
        nonce=nonce,
        nonce_der=nonce_der,
        cert_req=cert_req,
        extensions=extensions,
    )


def _read_extensions(buf: bytes, start: int, stop: int) -> tuple[str, ...]:
    """``Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension`` (RFC 5280 §4.1)."""
    oids: list[str] = []
    pos = start
    while pos < stop:
        if len(oids) >= _MAX_EXTENSIONS:
            raise der.DerError(f"more than {_MAX_EXTENSIONS} extensions")
        e0, e1 = der.expect(buf, pos, stop, der.SEQUENCE, "Extension")
        i0, i1 = der.expect(buf, e0, e1, der.OID, "extnID")
        oids.append(der.read_oid(buf, i0, i1, "extnID"))
        p = i1
        tag, c0, c1 = der.read_tlv(buf, p, e1)
        if tag == der.BOOLEAN:
            if not der.read_boolean(buf, c0, c1, "critical"):
                raise der.DerError("critical FALSE encoded explicitly (DEFAULT FALSE)")
            p = c1
            tag, c0, c1 = der.read_tlv(buf, p, e1)
        if tag != der.OCTET_STRING or c1 != e1:
            raise der.DerError("Extension: expected extnValue OCTET STRING last")
        pos = e1
    if not oids:
        raise der.DerError("empty Extensions (SIZE (1..MAX))")
    return tuple(oids)
