"""C2SP tlog-cosignature, the Ed25519 type (``cosignature/v1``): pure, over ``cryptography``.

A cosignature is a signed-note signature line ``— <name> base64(key ID ‖ timestamped
signature)`` where (c2sp.org/tlog-cosignature, "Format"):

- the key ID is ``SHA-256(<name> ‖ "\\n" ‖ 0x04 ‖ 32-byte Ed25519 public key)[:4]``;
- the timestamped signature is ``u64 timestamp ‖ ed25519_signature[64]``, the timestamp
  big-endian (RFC 8446 §3.3), POSIX seconds, at most 2^63 − 1;
- the Ed25519 signature covers ``"cosignature/v1\\n" ‖ "time <timestamp>\\n" ‖`` the
  checkpoint's whole note text (extension lines included, signature lines not)
  ("Ed25519 signed message").

The verifier key is the signed-note vkey with signature type 0x04:
``<name>+<hex key ID>+base64(0x04 ‖ public key)``. The private key is written as
``PRIVATE+KEY+<name>+<hex key ID>+base64(0x04 ‖ 32-byte seed)``, the shape of
golang.org/x/mod/sumdb/note's signer keys.

Only Ed25519: the ML-DSA-44 type (0x06) the current specification recommends for new
deployments needs an ML-DSA implementation ``cryptography`` does not ship yet; the vault's
own checkpoints are Ed25519 signed notes, so its clients already hold Ed25519 code.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from daemon.note import DASH, NoteError, NoteSignature, check_key_name

COSIGNATURE_V1: Final = 0x04  # c2sp.org/signed-note, "Signature types"
HEADER: Final = b"cosignature/v1\n"  # c2sp.org/tlog-cosignature, "Ed25519 signed message"
MAX_TIMESTAMP: Final = 2**63 - 1  # "It MUST NOT exceed 2^63 - 1"
SIGNATURE_BYTES: Final = 4 + 8 + 64  # key ID, timestamp, Ed25519 signature


def key_id(name: str, public: bytes) -> bytes:
    """c2sp.org/tlog-cosignature: ``SHA-256(<name> || "\\n" || 0x04 || public key)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([COSIGNATURE_V1]) + public).digest()[:4]


def signed_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signs: the header line, the time line, the note text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"a cosignature's timestamp is from 0 to {MAX_TIMESTAMP}")
    if not checkpoint_text.endswith("\n"):
        raise NoteError("a checkpoint's text ends with a newline")
    return HEADER + b"time %d\n" % timestamp + checkpoint_text.encode()


def _decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as e:  # binascii.Error is a ValueError
        raise NoteError(f"{what} is not base64") from e


@dataclass(frozen=True, slots=True)
class CosignatureVerifier:
    name: str
    key_id: bytes
    public: bytes  # 32 bytes, Ed25519

    @classmethod
    def from_key_string(cls, text: str) -> CosignatureVerifier:
        parts = text.strip().split("+", 2)  # base64 holds '+' too
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        check_key_name(name)
        raw = _decode(b64, "the verifier key")
        if len(raw) != 33 or raw[0] != COSIGNATURE_V1:
            raise NoteError("not a cosignature/v1 verifier key (type 0x04, 32-byte Ed25519)")
        public = raw[1:]
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id) or bytes.fromhex(hex_id) != key_id(
            name, public
        ):
            raise NoteError("the verifier key's ID does not match its name and key")
        return cls(name=name, key_id=key_id(name, public), public=public)

    def key_string(self) -> str:
        b64 = base64.b64encode(bytes([COSIGNATURE_V1]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{b64}"

    def verify(self, checkpoint_text: str, signature: NoteSignature) -> int | None:
        """The cosignature's timestamp when ``signature`` is this key's and verifies over
        ``checkpoint_text``; None when it is another key's line (ignore it, as signed-note
        says). A line that claims this key and does not verify raises :class:`NoteError`."""
        if (signature.name, signature.key_id) != (self.name, self.key_id):
            return None
        raw = signature.signature  # timestamped_signature, the key ID already stripped
        if len(raw) != SIGNATURE_BYTES - 4:
            raise NoteError(f"a cosignature/v1 of {self.name} is not 72 bytes")
        timestamp = int.from_bytes(raw[:8], "big")
        if timestamp > MAX_TIMESTAMP:
            raise NoteError(f"the cosignature of {self.name} has a timestamp above 2^63 - 1")
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(
                raw[8:], signed_message(checkpoint_text, timestamp)
            )
        except InvalidSignature:
            raise NoteError(f"the cosignature of {self.name} does not verify") from None
        return timestamp


@dataclass(frozen=True, slots=True)
class Cosigner:
    name: str
    seed: bytes  # the 32-byte Ed25519 private key

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(name=check_key_name(name), seed=seed)

    @classmethod
    def from_key_string(cls, text: str) -> Cosigner:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signer key is PRIVATE+KEY+<name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts[2:]
        raw = _decode(b64, "the signer key")
        if len(raw) != 33 or raw[0] != COSIGNATURE_V1:
            raise NoteError("not a cosignature/v1 signer key (type 0x04, 32-byte Ed25519)")
        cosigner = cls(name=check_key_name(name), seed=raw[1:])
        if hex_id != cosigner.verifier().key_id.hex():
            raise NoteError("the signer key's ID does not match its key")
        return cosigner

    def key_string(self) -> str:
        b64 = base64.b64encode(bytes([COSIGNATURE_V1]) + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier().key_id.hex()}+{b64}"

    def verifier(self) -> CosignatureVerifier:
        public = (
            Ed25519PrivateKey.from_private_bytes(self.seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        return CosignatureVerifier(name=self.name, key_id=key_id(self.name, public), public=public)

    def cosign(self, checkpoint_text: str, timestamp: int) -> str:
        """The signature line, newline included, cosigning ``checkpoint_text`` at
        ``timestamp`` (POSIX seconds: tlog-witness forbids zero, "MUST NOT omit")."""
        if timestamp <= 0:
            raise NoteError("a witness's cosignature carries a timestamp above zero")
        message = signed_message(checkpoint_text, timestamp)
        signature = Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)
        raw = self.verifier().key_id + timestamp.to_bytes(8, "big") + signature
        return f"{DASH}{self.name} {base64.b64encode(raw).decode()}\n"
