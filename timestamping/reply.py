"""Read an RFC 3161 ``TimeStampResp`` (§2.4.2) and match it to the request that asked for it.

Pure functions over bytes. Not a signature check: that is :mod:`timestamping.verify`.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, Final

from timestamping.errors import FailInfo, PKIStatus, TimestampingError, VerificationFailed
from timestamping.request import Digest, TimeStampQuery

MAX_REPLY_BYTES: Final = 1024 * 1024  # a token with a 3-certificate chain is ~5 KiB


# RFC 3161 §2.4.2, in words a person can act on.
_STATUS_WORDS: Final = {
    PKIStatus.GRANTED: "granted",
    PKIStatus.GRANTED_WITH_MODS: "granted with modifications",
    PKIStatus.REJECTION: "rejected",
    PKIStatus.WAITING: "waiting (the TSA will answer later)",
    PKIStatus.REVOCATION_WARNING: "revocation warning (TSA certificate about to be revoked)",
    PKIStatus.REVOCATION_NOTIFICATION: "revocation notification (TSA certificate revoked)",
}
_FAIL_WORDS: Final = {
    FailInfo.badAlg: "the hash algorithm is not accepted",
    FailInfo.badRequest: "the request is not permitted or not supported",
    FailInfo.badDataFormat: "the request is malformed",
    FailInfo.timeNotAvailable: "the TSA's time source is not available",
    FailInfo.unacceptedPolicy: "the requested policy is not supported by the TSA",
    FailInfo.unacceptedExtension: "the requested extension is not supported by the TSA",
    FailInfo.addInfoNotAvailable: "the additional information requested is not available",
    FailInfo.systemFailure: "the TSA failed internally",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Accuracy:
    """RFC 3161 §2.4.2 ``Accuracy``: the bound on genTime the TSA states."""

    seconds: int = 0
    millis: int = 0
    micros: int = 0

    @property
    def total_us(self) -> int:
        return self.seconds * 1_000_000 + self.millis * 1000 + self.micros

    def __str__(self) -> str:
        return f"±{self.total_us / 1e6:g} s"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo:
    """The ``TSTInfo`` of a token (RFC 3161 §2.4.2), as plain values."""

    version: int
    policy_oid: str
    digest: Digest | None  # None: an algorithm we do not know
    hash_oid: str
    message_imprint: bytes
    serial: int
    gen_time: dt.datetime  # UTC, aware (microsecond resolution)
    gen_time_text: str  # the GeneralizedTime exactly as encoded, e.g. 20261128105122.123456Z
    accuracy: Accuracy | None
    ordering: bool
    nonce: int | None
    tsa_name_der: bytes | None  # the TSTInfo's tsa GeneralName, as encoded

    @property
    def tsa_name(self) -> str | None:
        """The TSA's name as a person reads it (worked out when asked: it costs more than
        the rest of the TSTInfo, and the vault never asks)."""
        return None if self.tsa_name_der is None else _general_name_text(self.tsa_name_der)


@functools.lru_cache(maxsize=32)
def _general_name_text(der: bytes) -> str:
    from asn1crypto import x509

    name = x509.GeneralName.load(der)
    return str(name.chosen.human_friendly if name.name == "directory_name" else name.native)


@dataclass(frozen=True, slots=True, kw_only=True)
class TsaReply:
    """A parsed ``TimeStampResp`` (RFC 3161 §2.4.2)."""

    der: bytes
    status: PKIStatus
    status_text: tuple[str, ...]
    fail_info: frozenset[FailInfo]
    unknown_fail_bits: frozenset[int]
    info: TokenInfo | None  # present iff a token is
    token_der: bytes | None  # the TimeStampToken (CMS ContentInfo)
    certificates: tuple[bytes, ...]  # DER certificates carried in the token
    # As received, for timestamping.known_signers: the one SignerInfo (None when there is
    # not exactly one) and the encapsulated TSTInfo's bytes.
    signer_info_der: bytes | None = None
    tst_info_der: bytes | None = None
    digest_oids: tuple[str, ...] = ()  # the SignedData's digestAlgorithms

    @property
    def granted(self) -> bool:
        return self.status in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS)


class ReplyRejected(TimestampingError):
    """The TSA answered with a PKIStatus other than granted (RFC 3161 §2.4.2)."""

    def __init__(self, reply: TsaReply) -> None:
        super().__init__(describe_failure(reply))
        self.reply = reply

    def __reduce__(self) -> tuple[type[ReplyRejected], tuple[TsaReply]]:
        # Raised in a verifying process and re-raised in the caller's: rebuilt from the reply.
        return (type(self), (self.reply,))


def _fail_info(bits: object) -> tuple[frozenset[FailInfo], frozenset[int]]:
    from asn1crypto import tsp

    names = {v: k for k, v in tsp.PKIFailureInfo._map.items()}
    known: set[FailInfo] = set()
    unknown: set[int] = set()
    for item in bits if isinstance(bits, set) else ():
        bit = names.get(item, item) if isinstance(item, str) else item
        if isinstance(bit, int):
            try:
                known.add(FailInfo(bit))
            except ValueError:
                unknown.add(bit)
    return frozenset(known), frozenset(unknown)


def _token_info(tst: object) -> TokenInfo:
    from asn1crypto import core, tsp

    assert isinstance(tst, tsp.TSTInfo)
    imprint = tst["message_imprint"]
    hash_oid = imprint["hash_algorithm"]["algorithm"].dotted
    acc = tst["accuracy"]
    accuracy = None
    if not isinstance(acc, core.Void):  # (not .native: it would convert it all to compare)
        accuracy = Accuracy(
            seconds=acc["seconds"].native or 0,
            millis=acc["millis"].native or 0,
            micros=acc["micros"].native or 0,
        )
    tsa = tst["tsa"]  # [0] EXPLICIT GeneralName: kept as the GeneralName's own bytes
    tsa_der = None if isinstance(tsa, core.Void) else tsa.untag().dump()
    gen_time = tst["gen_time"]
    return TokenInfo(
        version=1 if tst["version"].native == "v1" else int(tst["version"].native),
        policy_oid=tst["policy"].dotted,
        digest=Digest.from_oid(hash_oid),
        hash_oid=hash_oid,
        message_imprint=imprint["hashed_message"].native,
        serial=tst["serial_number"].native,
        gen_time=gen_time.native.astimezone(dt.UTC),
        gen_time_text=gen_time.contents.decode("ascii"),
        accuracy=accuracy,
        ordering=bool(tst["ordering"].native),
        nonce=tst["nonce"].native,
        tsa_name_der=tsa_der,
    )


@functools.cache
def _resp_spec() -> Any:
    """RFC 3161 §2.4.2 ``TimeStampResp`` with the token OPTIONAL, as the RFC has it
    (asn1crypto's declares it mandatory and so cannot read a rejection)."""
    from asn1crypto import cms, core, tsp

    class TimeStampResp(core.Sequence):  # type: ignore[misc]
        _fields = [  # noqa: RUF012 - asn1crypto's declaration style
            ("status", tsp.PKIStatusInfo),
            ("time_stamp_token", cms.ContentInfo, {"optional": True}),
        ]

    return TimeStampResp


def _tlv_end(buf: bytes, pos: int) -> int:
    """End offset of the DER element starting at ``pos`` (X.690 §8.1.2-8.1.3)."""
    pos += 1
    if buf[pos - 1] & 0x1F == 0x1F:  # high tag number form
        while buf[pos] & 0x80:
            pos += 1
        pos += 1
    first = buf[pos]
    pos += 1
    if first < 0x80:
        return pos + first
    n = first & 0x7F
    return pos + n + int.from_bytes(buf[pos : pos + n], "big")


def _second_element(der: bytes) -> bytes:
    """The raw bytes of the 2nd element of the outer SEQUENCE (the TimeStampToken), as
    received; the caller has already parsed ``der`` as a TimeStampResp."""
    first = der[1]  # the outer SEQUENCE's tag (0x30) is one byte; then its length
    start = 2 if first < 0x80 else 2 + (first & 0x7F)
    status_end = _tlv_end(der, start)
    return der[status_end : _tlv_end(der, status_end)]


def parse_reply(der: bytes) -> TsaReply:
    """Parse a DER ``TimeStampResp``; :class:`TimestampingError` if it is not one."""
    from asn1crypto import cms, core, tsp

    if len(der) > MAX_REPLY_BYTES:
        raise TimestampingError(f"time-stamp reply larger than {MAX_REPLY_BYTES} bytes")
    status_codes = {name: code for code, name in tsp.PKIStatus._map.items()}
    try:
        resp = _resp_spec().load(der, strict=True)
        raw_status = resp["status"]["status"].native
        status = PKIStatus(status_codes.get(raw_status, raw_status))
    except Exception as e:  # asn1crypto raises many types (ValueError, TypeError, KeyError…)
        raise TimestampingError(f"not a valid RFC 3161 TimeStampResp: {e}") from e
    try:
        status_info = resp["status"]
        text = status_info["status_string"]
        status_text = tuple(text.native) if text.native else ()
        fail_info, unknown = _fail_info(status_info["fail_info"].native)
        token = resp["time_stamp_token"]
        info = None
        token_der = None
        certificates: tuple[bytes, ...] = ()
        signer_info = tst_der = None
        digest_oids: tuple[str, ...] = ()
        if not isinstance(token, core.Void):
            if token["content_type"].native != "signed_data":
                raise ValueError("the token is not CMS SignedData")
            signed = token["content"]
            assert isinstance(signed, cms.SignedData)
            encap = signed["encap_content_info"]
            if encap["content_type"].native != "tst_info":
                raise ValueError("the token does not encapsulate a TSTInfo")
            info = _token_info(encap["content"].parsed)
            token_der = _second_element(der)  # as received: never re-encoded
            certificates = tuple(
                c.chosen.dump() for c in signed["certificates"] if c.name == "certificate"
            )
            signers = signed["signer_infos"]
            signer_info = signers[0].dump() if len(signers) == 1 else None
            tst_der = encap["content"].contents
            digest_oids = tuple(a["algorithm"].dotted for a in signed["digest_algorithms"])
    except Exception as e:  # see above: wrap whatever asn1crypto raises
        raise TimestampingError(f"not a valid RFC 3161 TimeStampResp: {e}") from e
    if status in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS) and info is None:
        raise TimestampingError("the TSA said granted but sent no token (RFC 3161 §2.4.2)")
    return TsaReply(
        der=der,
        status=status,
        status_text=status_text,
        fail_info=fail_info,
        unknown_fail_bits=unknown,
        info=info,
        token_der=token_der,
        certificates=certificates,
        signer_info_der=signer_info,
        tst_info_der=tst_der,
        digest_oids=digest_oids,
    )


def describe_failure(reply: TsaReply) -> str:
    """A refusal in words: status, failInfo names and meanings, the TSA's own text."""
    words = [f"the TSA answered: {_STATUS_WORDS[reply.status]}"]
    for fi in sorted(reply.fail_info, key=lambda f: f.value):
        words.append(f"{fi.name} ({_FAIL_WORDS[fi]})")
    for bit in sorted(reply.unknown_fail_bits):
        words.append(f"unknown failInfo bit {bit}")
    if reply.status_text:
        words.append("TSA says: " + " / ".join(repr(t) for t in reply.status_text))
    return "; ".join(words)


def check_reply(query: TimeStampQuery, reply: TsaReply) -> TokenInfo:
    """The checks RFC 3161 §2.4.2 asks of a requester before accepting a token.

    Not a signature check (that is :func:`verify_reply`): this matches the reply to the
    request — status granted, same imprint and algorithm, same nonce, the policy asked for,
    the certificate asked for.
    """
    if not reply.granted:
        raise ReplyRejected(reply)
    info = reply.info
    assert info is not None  # parse_reply guarantees a token when granted
    if info.hash_oid != query.digest.oid or info.message_imprint != query.message_imprint:
        raise VerificationFailed("the token time-stamps another message than the one sent")
    if query.nonce is not None and info.nonce != query.nonce:
        raise VerificationFailed(
            "the token's nonce differs from the request's (a replayed or misrouted reply)"
        )
    if query.policy_oid is not None and info.policy_oid != query.policy_oid:
        raise VerificationFailed(
            f"the token's policy {info.policy_oid} is not the one requested ({query.policy_oid})"
        )
    if query.cert_req and not reply.certificates:
        raise VerificationFailed("the TSA certificate was requested but is not in the token")
    return info


@dataclass(frozen=True, slots=True)
class StoredToken:
    """What a report says of a token already verified and stored: when, how precisely,
    under which serial, signed with which certificates."""

    gen_time: dt.datetime
    accuracy: Accuracy | None
    serial: int
    certificates: tuple[bytes, ...]


def read_stored_token(der: bytes, gen_time_text: str | None = None) -> StoredToken:
    """A stored token's facts, read by rfc3161-client's decoder (Rust: far faster than
    :func:`parse_reply`, for the hundreds of tokens of an audit trail; benchmarks/RESULTS.md).

    That decoder keeps genTime to the second only: ``gen_time_text``, the genTime stored
    beside the token (RFC 3339), gives the fraction when it agrees to the second; else, and
    for a token the decoder cannot read, :func:`parse_reply` reads it all."""
    import rfc3161_client

    try:
        decoded = rfc3161_client.decode_timestamp_response(der)
        tst, certs = decoded.tst_info, decoded.signed_data.certificates
    except ValueError:
        tst, certs = None, set()
    if tst is not None and gen_time_text is not None:
        stored = dt.datetime.fromisoformat(gen_time_text.replace("Z", "+00:00"))
        if stored.replace(microsecond=0) == tst.gen_time.astimezone(dt.UTC):
            acc = tst.accuracy
            accuracy = None
            if acc is not None:
                accuracy = Accuracy(seconds=acc.seconds or 0, millis=acc.millis or 0,
                                    micros=acc.micros or 0)  # fmt: skip
            return StoredToken(stored, accuracy, tst.serial_number, tuple(sorted(certs)))
    reply = parse_reply(der)
    if reply.info is None:
        raise TimestampingError("a stored token that carries no TSTInfo")
    info = reply.info
    return StoredToken(info.gen_time, info.accuracy, info.serial, reply.certificates)
