"""The leaf: an entry's canonical bytes, with its personal data replaced by commitments.

An entry's leaf is its RFC 8785 (JCS) encoding — deterministic, and a person reading it
sees JSON — with three additions and one substitution (docs/adr/0008-leaf-encoding.md):

- ``"format": "horodate/entry/v1"`` names the encoding, so that a verifier in ten years
  knows what it reads;
- ``"received_at"``: when the vault received it (the host's clock, RFC 3339 UTC; the token
  is what proves time, this says when the vault saw it);
- every personal member (:data:`PERSONAL_POINTERS`: the student — INE, birth date, name —,
  the teacher's and the correction author's names) is replaced by
  ``{"commitment": hex(SHA-256(salt ‖ JCS(value)))}`` with a fresh 32-byte random salt.

Why salted: INE × birth date is a small space (a few million birth dates times the INEs of
one school), so an unsalted or unkeyed hash of them is reversed by enumeration; a 256-bit
random salt makes the commitment hiding, and SHA-256 keeps it binding
(docs/adr/0009-identity-commitments.md). The salts and the values are the *disclosures*:
they live in their own table, are handed to an auditor for the entries in scope only, and
are destroyed when retention ends — the leaf, its token and its proofs stay verifiable.

A student's records are found across years by a keyed lookup, HMAC-SHA-256 under the
vault's lookup secret of (establishment, INE, birth date): not in the leaf, beside the
disclosures, destroyed with them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import rfc8785

from daemon.errors import VaultError

LEAF_FORMAT: Final = "horodate/entry/v1"
SALT_BYTES: Final = 32
# RFC 6901 pointers of the members that are personal data, in the entry's JSON form.
PERSONAL_POINTERS: Final = ("/student", "/teacher/name", "/author/name")


class LeafError(VaultError):
    """A leaf or a disclosure that does not hold together."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """What the vault stores for one entry: the leaf bytes and what opens them."""

    data: bytes  # the exact RFC 8785 bytes, the Merkle leaf
    hash: bytes  # RFC 9162 leaf hash, SHA-256(0x00 ‖ data): the token's message imprint
    disclosures: dict[str, dict[str, Any]]  # pointer -> {"salt": base64, "value": ...}


def canonical(value: object) -> bytes:
    """RFC 8785 bytes of a JSON value (the rfc8785 package: numbers, strings and member
    order exactly as the RFC says, which ``json.dumps(sort_keys=True)`` does not)."""
    try:
        return rfc8785.dumps(cast(Any, value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise LeafError(f"cannot encode canonically: {e}") from e


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()  # RFC 9162 §2.1.1


def commitment(salt: bytes, value: object) -> str:
    """hex SHA-256(salt ‖ JCS(value)): hiding thanks to the salt, binding thanks to SHA-256."""
    return hashlib.sha256(salt + canonical(value)).hexdigest()


def _parent(doc: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str] | None:
    *path, last = pointer.lstrip("/").split("/")
    node: Any = doc
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if not isinstance(node, dict) or last not in node:
        return None
    return node, last


def make_leaf(
    entry_json: Mapping[str, Any],
    *,
    received_at: str,
    salt: Callable[[], bytes] = lambda: secrets.token_bytes(SALT_BYTES),
) -> Leaf:
    """The leaf of an entry (its JSON form, :func:`daemon.records.entry_to_json`)."""
    doc: dict[str, Any] = copy.deepcopy(dict(entry_json))
    disclosures: dict[str, dict[str, Any]] = {}
    for pointer in PERSONAL_POINTERS:
        found = _parent(doc, pointer)
        if found is None:
            continue
        parent, name = found
        s = salt()
        value = parent[name]
        parent[name] = {"commitment": commitment(s, value)}
        disclosures[pointer] = {"salt": base64.b64encode(s).decode("ascii"), "value": value}
    doc["format"] = LEAF_FORMAT
    doc["received_at"] = received_at
    data = canonical(doc)
    return Leaf(data=data, hash=leaf_hash(data), disclosures=disclosures)


def open_leaf(data: bytes, disclosures: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The entry as it was deposited: the leaf with every given disclosure checked against
    its commitment and put back. Raises :class:`LeafError` naming the pointer that fails."""
    import json

    try:
        doc = json.loads(data)
    except ValueError as e:
        raise LeafError(f"the leaf is not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != LEAF_FORMAT:
        raise LeafError(f"the leaf is not a {LEAF_FORMAT} document")
    if canonical(doc) != data:
        raise LeafError("the leaf is not in RFC 8785 canonical form")
    for pointer, disclosure in disclosures.items():
        found = _parent(doc, pointer)
        if found is None:
            raise LeafError(f"{pointer}: the leaf has no commitment there")
        parent, name = found
        committed = parent[name]
        try:
            salt = base64.b64decode(disclosure["salt"], validate=True)
            value = disclosure["value"]
        except (KeyError, TypeError, ValueError) as e:
            raise LeafError(f"{pointer}: malformed disclosure") from e
        if not isinstance(committed, dict) or set(committed) != {"commitment"}:
            raise LeafError(f"{pointer}: the leaf has no commitment there")
        if not hmac.compare_digest(commitment(salt, value), str(committed["commitment"])):
            raise LeafError(f"{pointer}: the disclosure does not open the leaf's commitment")
        parent[name] = value
    del doc["format"]
    return doc


def student_lookup(secret: bytes, establishment: str, ine: str, birth_date: str) -> bytes:
    """The keyed lookup of one student in one establishment (HMAC-SHA-256, RFC 2104)."""
    message = canonical([establishment, ine, birth_date])
    return hmac.new(secret, message, hashlib.sha256).digest()
