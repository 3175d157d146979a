"""C2SP tlog-cosignature, the Ed25519 type (``cosignature/v1``): pure, over ``cryptography``.

A cosignature is a signed-note signature line ``— <name> base64(key ID ‖ timestamped
signature)`` where (c2sp.org/tlog-cosignature, "Format"):

- the key ID is ``SHA-256(<name> ‖ "\\n" ‖ 0x04 ‖ 32-byte Ed25519 public key)[:4]``;
- the timestamped signature is ``u64 timestamp ‖ ed25519_signature[64]``, the timestamp
  big-endian (RFC 8446 §3.3), POSIX seconds, at most 2^63 − 1;
- the Ed25519 signature covers ``"cosignature/v1\\n" ‖ "time <timestamp>\\n" ‖`` the
  checkpoint's whole note text (extension lines included, signature lines not)
  ("Ed25519 signed message").

The keys are signed-note Ed25519 keys of signature type 0x04 (:class:`daemon.note.Signer`
and :class:`daemon.note.Verifier`, which parse and write them and compute the key ID):
``<name>+<hex key ID>+base64(0x04 ‖ public key)`` for the verifier key and
``PRIVATE+KEY+<name>+<hex key ID>+base64(0x04 ‖ 32-byte seed)`` for the private key, the
shape of golang.org/x/mod/sumdb/note's signer keys. The type byte keeps them apart from
note keys: a cosignature key is refused where a note key is expected, and the reverse.

Only Ed25519: the ML-DSA-44 type (0x06) the current specification recommends for new
deployments needs an ML-DSA implementation ``cryptography`` does not ship yet; the vault's
own checkpoints are Ed25519 signed notes, so its clients already hold Ed25519 code.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

from daemon.note import DASH, NoteError, NoteSignature, Signer, Verifier

COSIGNATURE_V1: Final = 0x04  # c2sp.org/signed-note, "Signature types"
HEADER: Final = b"cosignature/v1\n"  # c2sp.org/tlog-cosignature, "Ed25519 signed message"
MAX_TIMESTAMP: Final = 2**63 - 1  # "It MUST NOT exceed 2^63 - 1"
SIGNATURE_BYTES: Final = 4 + 8 + 64  # key ID, timestamp, Ed25519 signature


def signed_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signs: the header line, the time line, the note text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"a cosignature's timestamp is from 0 to {MAX_TIMESTAMP}")
    if not checkpoint_text.endswith("\n"):
        raise NoteError("a checkpoint's text ends with a newline")
    return HEADER + b"time %d\n" % timestamp + checkpoint_text.encode()


@dataclass(frozen=True, slots=True)
class CosignatureVerifier:
    """A witness's cosignature/v1 verifier key: a signed-note Ed25519 key of type 0x04."""

    key: Verifier

    @classmethod
    def from_key_string(cls, text: str) -> CosignatureVerifier:
        return cls(Verifier.from_key_string(text, COSIGNATURE_V1))

    @property
    def name(self) -> str:
        return self.key.name

    def key_string(self) -> str:
        return self.key.key_string()

    def verify(self, checkpoint_text: str, signature: NoteSignature) -> int | None:
        """The cosignature's timestamp when ``signature`` is this key's and verifies over
        ``checkpoint_text``; None when it is another key's line (ignore it, as signed-note
        says). A line that claims this key and does not verify raises :class:`NoteError`."""
        if (signature.name, signature.key_id) != (self.key.name, self.key.key_id):
            return None
        raw = signature.signature  # timestamped_signature, the key ID already stripped
        if len(raw) != SIGNATURE_BYTES - 4:
            raise NoteError(f"a cosignature/v1 of {self.name} is not 72 bytes")
        timestamp = int.from_bytes(raw[:8], "big")
        if timestamp > MAX_TIMESTAMP:
            raise NoteError(f"the cosignature of {self.name} has a timestamp above 2^63 - 1")
        if not self.key.verify(signed_message(checkpoint_text, timestamp), raw[8:]):
            raise NoteError(f"the cosignature of {self.name} does not verify")
        return timestamp


@dataclass(frozen=True, slots=True)
class Cosigner:
    """A witness's cosignature/v1 signer key: a signed-note Ed25519 key of type 0x04."""

    key: Signer

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        return cls(Signer.generate(name, COSIGNATURE_V1))

    @classmethod
    def from_key_string(cls, text: str) -> Cosigner:
        return cls(Signer.from_key_string(text, COSIGNATURE_V1))

    @property
    def name(self) -> str:
        return self.key.name

    def key_string(self) -> str:
        return self.key.key_string()

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.key.verifier())

    def cosign(self, checkpoint_text: str, timestamp: int) -> str:
        """The signature line, newline included, cosigning ``checkpoint_text`` at
        ``timestamp`` (POSIX seconds: tlog-witness forbids zero, "MUST NOT omit")."""
        if timestamp <= 0:
            raise NoteError("a witness's cosignature carries a timestamp above zero")
        signature = self.key.sign(signed_message(checkpoint_text, timestamp))
        raw = self.key.verifier().key_id + timestamp.to_bytes(8, "big") + signature
        return f"{DASH}{self.name} {base64.b64encode(raw).decode()}\n"
