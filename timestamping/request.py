"""Build an RFC 3161 ``TimeStampReq`` (§2.4.1) for a message imprint computed by the caller."""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from timestamping.errors import TimestampingError

_NONCE_BITS: Final = 64


class Digest(enum.Enum):
    """Message-imprint hash algorithms we ask for (RFC 5754 §2 OIDs)."""

    SHA256 = ("sha256", "2.16.840.1.101.3.4.2.1", 32)
    SHA384 = ("sha384", "2.16.840.1.101.3.4.2.2", 48)
    SHA512 = ("sha512", "2.16.840.1.101.3.4.2.3", 64)

    def __init__(self, hashlib_name: str, oid: str, digest_bytes: int) -> None:
        self.hashlib_name = hashlib_name
        self.oid = oid
        self.digest_bytes = digest_bytes

    @classmethod
    def from_name(cls, name: str) -> Digest:
        for d in cls:
            if d.hashlib_name == name.lower():
                return d
        raise TimestampingError(
            f"unsupported hash algorithm {name!r} (use sha256, sha384 or sha512)"
        )

    @classmethod
    def from_oid(cls, oid: str) -> Digest | None:
        return next((d for d in cls if d.oid == oid), None)

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.hashlib_name, data).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeStampQuery:
    """A ``TimeStampReq`` (RFC 3161 §2.4.1) and what we asked in it."""

    der: bytes
    digest: Digest
    message_imprint: bytes
    nonce: int | None
    cert_req: bool
    policy_oid: str | None


def random_nonce() -> int:
    """A fresh 64-bit nonce (RFC 3161 §2.4.1: a large random number, to match the reply)."""
    return secrets.randbits(_NONCE_BITS)


def hash_file(path: Path, digest: Digest = Digest.SHA256) -> bytes:
    """The digest of a file's content, read in chunks (files may be large)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, digest.hashlib_name).digest()
    except OSError as e:
        raise TimestampingError(f"cannot read {path}: {e.strerror or e}") from e


def build_request(
    message_imprint: bytes,
    *,
    digest: Digest = Digest.SHA256,
    nonce: int | None,
    cert_req: bool = True,
    policy_oid: str | None = None,
) -> TimeStampQuery:
    """A DER ``TimeStampReq`` for an already-computed message imprint (RFC 3161 §2.4.1)."""
    from asn1crypto import tsp  # imported here: ``horodate --help`` stays fast

    if len(message_imprint) != digest.digest_bytes:
        raise TimestampingError(
            f"a {digest.hashlib_name} imprint is {digest.digest_bytes} bytes, "
            f"got {len(message_imprint)}"
        )
    if nonce is not None and nonce < 0:
        raise TimestampingError("the nonce must not be negative")
    fields: dict[str, object] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": digest.hashlib_name},
            "hashed_message": message_imprint,
        },
        "cert_req": cert_req,
    }
    if policy_oid is not None:
        fields["req_policy"] = check_oid(policy_oid)
    if nonce is not None:
        fields["nonce"] = nonce
    try:
        der = tsp.TimeStampReq(fields).dump()
    except (ValueError, TypeError) as e:
        raise TimestampingError(f"cannot encode the time-stamp request: {e}") from e
    return TimeStampQuery(
        der=der,
        digest=digest,
        message_imprint=message_imprint,
        nonce=nonce,
        cert_req=cert_req,
        policy_oid=policy_oid,
    )


def check_oid(oid: str) -> str:
    parts = oid.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts) or int(parts[0]) > 2:
        raise TimestampingError(
            f"{oid!r} is not an object identifier (dotted numbers, e.g. 1.2.3.4)"
        )
    return oid
