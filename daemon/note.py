"""C2SP signed-note (Ed25519) and tlog-checkpoint: the vault's signed tree heads.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> <base64(4-byte key ID ‖ signature)>`` (U+2014 EM DASH, a space). For an
Ed25519 key (type 0x01) the key ID is the first four bytes of
``SHA-256(name ‖ "\\n" ‖ 0x01 ‖ public key)``; the verifier key is written
``<name>+<hex key ID>+<base64(0x01 ‖ public key)>`` and the signer key
``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 ‖ 32-byte seed)>`` (c2sp.org/signed-note).
:class:`Signer` and :class:`Verifier` take the signature type byte as a parameter: the same
Ed25519 keys, written the same way, serve other signature types over other messages, such as
the witnesses' cosignature/v1 (type 0x04, :mod:`daemon.witness.cosignature`). A checkpoint's
text is the origin line, the tree size in decimal, the base64 root hash, then optional
extension lines (c2sp.org/tlog-checkpoint).

Written here rather than taken from a library: no maintained Python package implements
signed notes (the reference is Go's golang.org/x/mod/sumdb/note); the format is forty lines
over ``cryptography``'s Ed25519.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
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

from daemon.errors import VaultError

ED25519: Final = 0x01
DASH: Final = "\u2014 "
MAX_NOTE_BYTES: Final = 1024 * 1024
MAX_SIGNATURES: Final = 100
_NAME = re.compile(r"[^\s+]+")
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # ASCII controls but the newline


class NoteError(VaultError):
    """A malformed note, key or checkpoint, or one no known key signed."""


def key_id(name: str, public: bytes, key_type: int = ED25519) -> bytes:
    """c2sp.org/signed-note: ``SHA-256(name ‖ "\\n" ‖ signature type ‖ public key)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([key_type]) + public).digest()[:4]


def check_key_name(name: str) -> str:
    """``name``, if it is a valid key name (c2sp.org/signed-note: non-empty, no Unicode
    space, no '+')."""
    if not _NAME.fullmatch(name):
        raise NoteError(f"key name {name!r}: non-empty, no space, no '+'")
    return name


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NoteError(f"{what} is not base64") from e


def _key(b64: str, key_type: int, what: str) -> bytes:
    """The 32 key bytes of ``base64(type ‖ key)``, if the type byte is ``key_type``."""
    raw = _b64(b64, f"the {what} key")
    if len(raw) != 33 or raw[0] != key_type:
        raise NoteError(
            f"not a {what} key of signature type 0x{key_type:02x} "
            "(that type byte, then a 32-byte Ed25519 key)"
        )
    return raw[1:]


def _key_string(key_type: int, key: bytes) -> str:
    return base64.b64encode(bytes([key_type]) + key).decode()


@dataclass(frozen=True, slots=True)
class Verifier:
    """An Ed25519 verifier key of signature type ``key_type`` (0x01: a note signature)."""

    name: str
    key_id: bytes
    public: bytes  # 32 bytes, Ed25519
    key_type: int = ED25519

    @classmethod
    def from_key_string(cls, text: str, key_type: int = ED25519) -> Verifier:
        """The key ``<name>+<hex key ID>+<base64(type ‖ public key)>``, of type ``key_type``."""
        parts = text.strip().split("+", 2)  # base64 has '+' too
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        check_key_name(name)
        public = _key(b64, key_type, "verifier")
        kid = key_id(name, public, key_type)
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id) or bytes.fromhex(hex_id) != kid:
            raise NoteError("the verifier key's ID does not match its name and key")
        return cls(name=name, key_id=kid, public=public, key_type=key_type)

    def key_string(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{_key_string(self.key_type, self.public)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Signer:
    """An Ed25519 signer key of signature type ``key_type`` (0x01: a note signature)."""

    name: str
    seed: bytes  # the 32-byte Ed25519 private key
    key_type: int = ED25519

    @classmethod
    def generate(cls, name: str, key_type: int = ED25519) -> Signer:
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(name=check_key_name(name), seed=seed, key_type=key_type)

    @classmethod
    def from_key_string(cls, text: str, key_type: int = ED25519) -> Signer:
        """The key ``PRIVATE+KEY+<name>+<hex key ID>+<base64(type ‖ seed)>``, of type
        ``key_type``."""
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signer key is PRIVATE+KEY+<name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts[2:]
        seed = _key(b64, key_type, "signer")
        signer = cls(name=check_key_name(name), seed=seed, key_type=key_type)
        if hex_id != signer.verifier().key_id.hex():
            raise NoteError("the signer key's ID does not match its key")
        return signer

    def key_string(self) -> str:
        b64 = _key_string(self.key_type, self.seed)
        return f"PRIVATE+KEY+{self.name}+{self.verifier().key_id.hex()}+{b64}"

    def verifier(self) -> Verifier:
        public = (
            Ed25519PrivateKey.from_private_bytes(self.seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        kid = key_id(self.name, public, self.key_type)
        return Verifier(name=self.name, key_id=kid, public=public, key_type=self.key_type)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def _note_key(key: Signer | Verifier) -> None:
    """A note is signed with type 0x01 keys only: a key of another type signs other messages
    (c2sp.org/signed-note, "Signature types")."""
    if key.key_type != ED25519:
        raise NoteError(
            f"{key.name}'s key is of signature type 0x{key.key_type:02x}, not a note key"
        )


def sign_note(text: str, signers: Iterable[Signer]) -> str:
    if not text.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    lines = []
    for s in signers:
        _note_key(s)
        sig = s.verifier().key_id + s.sign(text.encode())
        lines.append(f"{DASH}{s.name} {base64.b64encode(sig).decode()}\n")
    return text + "\n" + "".join(lines)


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a note, as it came: ``— <name> base64(key ID ‖ signature)``."""

    name: str
    key_id: bytes  # 4 bytes
    signature: bytes
    line: str  # the whole line, without its newline


def parse_note(note: str) -> tuple[str, list[NoteSignature]]:
    """The note's text and its signature lines, checked for form only (nothing verified).

    c2sp.org/signed-note: text ending in a newline, a blank line, one or more signature
    lines; valid UTF-8 with no ASCII control character but the newline; the text is
    separated from the signatures by the *last* blank line."""
    try:
        size = len(note.encode())
    except UnicodeEncodeError as e:  # a lone surrogate: no UTF-8 form
        raise NoteError("a note is valid UTF-8") from e
    if size > MAX_NOTE_BYTES:
        raise NoteError(f"a note is at most {MAX_NOTE_BYTES} bytes")
    if _CONTROL.search(note):
        raise NoteError("a note holds no control character but the newline")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("a note is text, a blank line, and signature lines")
    text, block = note[: split + 1], note[split + 2 :]
    lines = block.split("\n")[:-1]
    if not lines or len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a note has 1 to {MAX_SIGNATURES} signature lines")
    signatures: list[NoteSignature] = []
    for line in lines:
        if not line.startswith(DASH):
            raise NoteError(f"malformed signature line {line[:80]!r}")
        name, _, b64 = line[len(DASH) :].partition(" ")
        raw = _b64(b64, "a signature")
        if len(raw) < 5 or not _NAME.fullmatch(name):
            raise NoteError(f"malformed signature line {line[:80]!r}")
        signatures.append(NoteSignature(name=name, key_id=raw[:4], signature=raw[4:], line=line))
    return text, signatures


def open_note(note: str, verifiers: Iterable[Verifier]) -> tuple[str, list[str]]:
    """The note's text and the names of the known keys whose signature verifies.

    Signatures by unknown keys are ignored (c2sp.org/signed-note); a signature whose key ID
    is known but which does not verify is an error, as is a note no known key signed."""
    text, signatures = parse_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    for key in known.values():
        _note_key(key)
    good: list[str] = []
    for sig in signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue
        if not v.verify(text.encode(), sig.signature):
            raise NoteError(f"the signature of {sig.name} does not verify")
        good.append(sig.name)
    if not good:
        raise NoteError("no known key signed this note")
    return text, good


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise NoteError("a checkpoint ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or not lines[0]:
            raise NoteError("a checkpoint has an origin, a size and a root hash")
        if not _SIZE.fullmatch(lines[1]):
            raise NoteError(f"checkpoint size {lines[1]!r} is not a decimal number")
        root = _b64(lines[2], "the checkpoint's root hash")
        if len(root) != 32:
            raise NoteError("the checkpoint's root hash is not 32 bytes")
        if any(not line for line in lines[3:]):
            raise NoteError("a checkpoint's extension lines are not empty")
        return cls(origin=lines[0], size=int(lines[1]), root=root, extensions=tuple(lines[3:]))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    return sign_note(checkpoint.text(), [signer])


def verify_checkpoint(note: str, verifier: Verifier) -> Checkpoint:
    """The checkpoint, once ``verifier`` signed it and its origin is the key's name."""
    text, _ = open_note(note, [verifier])
    checkpoint = Checkpoint.parse(text)
    if checkpoint.origin != verifier.name:
        raise NoteError(f"the checkpoint's origin {checkpoint.origin!r} is not {verifier.name!r}")
    return checkpoint
