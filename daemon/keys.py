"""The vault's secrets and its callers' bearer tokens.

Files in ``DATA_DIR/keys/`` (mode 0600, created at first start):

- ``vault.key``: the Ed25519 signing key of the checkpoints, a C2SP signed-note private key
  string (``PRIVATE+KEY+<name>+<id>+<base64>``); ``vault.vkey`` its verifier key, public;
- ``lookup.key``: 32 random bytes (base64), the HMAC key of the students' lookup (the leaf
  never holds it, see :mod:`daemon.leaf`).

Bearer tokens (``horodate vault keys create``): 32 random bytes, printed once as
``hv_<base64url>``; the database keeps only their SHA-256 (a token is high-entropy, so a
plain hash is enough: no password hashing needed).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from daemon.errors import VaultError
from daemon.note import Signer

TOKEN_PREFIX: Final = "hv_"


class Role(StrEnum):
    ESTABLISHMENT = "establishment"  # reads and writes its own establishment's entries
    AUDITOR = "auditor"  # reads one establishment's entries, granted to a funder
    ADMIN = "admin"  # the hosting operator: usage, journal, verification; no personal data


class KeyFileError(VaultError):
    """A key file is missing, unreadable or malformed."""


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True, slots=True)
class VaultKeys:
    signer: Signer
    lookup_secret: bytes

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier().key_string()


def load_or_create(keys_dir: Path, name: str) -> VaultKeys:
    """The vault's keys, created on first start; refuses a key made for another name."""
    key_file, vkey_file, lookup_file = (
        keys_dir / "vault.key",
        keys_dir / "vault.vkey",
        keys_dir / "lookup.key",
    )
    try:
        if not key_file.exists():
            signer = Signer.generate(name)
            _write_secret(key_file, signer.key_string())
            vkey_file.write_text(signer.verifier().key_string() + "\n")
        if not lookup_file.exists():
            _write_secret(lookup_file, base64.b64encode(secrets.token_bytes(32)).decode())
        signer = Signer.from_key_string(key_file.read_text().strip())
        lookup = base64.b64decode(lookup_file.read_text().strip(), validate=True)
    except (OSError, ValueError) as e:
        raise KeyFileError(f"cannot use the vault's keys in {keys_dir}: {e}") from e
    if signer.name != name:
        raise KeyFileError(
            f"{key_file} signs for {signer.name!r}, but this vault is named {name!r}: a vault "
            "keeps its name for life (its checkpoints carry it)"
        )
    if len(lookup) != 32:
        raise KeyFileError(f"{lookup_file} does not hold 32 bytes")
    if not vkey_file.exists():
        vkey_file.write_text(signer.verifier().key_string() + "\n")
    return VaultKeys(signer=signer, lookup_secret=lookup)


def load_existing(keys_dir: Path) -> VaultKeys:
    """The keys of a vault that has run (the command line's tools: its name is in them)."""
    try:
        signer = Signer.from_key_string((keys_dir / "vault.key").read_text().strip())
        lookup = base64.b64decode((keys_dir / "lookup.key").read_text().strip(), validate=True)
    except (OSError, ValueError) as e:
        raise KeyFileError(f"cannot read the vault's keys in {keys_dir}: {e}") from e
    return VaultKeys(signer=signer, lookup_secret=lookup)


def new_token() -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
