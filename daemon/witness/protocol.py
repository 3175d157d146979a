"""``add-checkpoint`` of c2sp.org/tlog-witness, sans-IO: the request's form, the checks.

Bytes in, a checked request out, or one of the refusals below; nothing here opens a file
or reads a clock. The checks run in the specification's order, refined as its reference
witness (Sunlight's) refines it — what depends on the request alone is decided before what
depends on the witness's state — except that the whole body's form is checked first:

1. the body's form (:func:`parse`) — 400;
2. the origin is a log the witness is configured for — else 404;
3. a trusted key's signature verifies, and no line claiming a trusted key fails — else 403
   (:func:`check_signatures`);
4. the old size is not above the checkpoint's — else 400; a checkpoint of size 0 has the
   empty tree's root — else 422 (:func:`check_request`);
5. under the origin's lock, against the latest cosigned state (:func:`check_against`): the
   old size is its size — else 409, telling that size; from 0, no proof; at the same size,
   the same root; otherwise an RFC 6962 consistency proof from the state's root — else 422.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from daemon.errors import VaultError
from daemon.merkle import EMPTY_ROOT, ProofError, verify_consistency
from daemon.note import Checkpoint, NoteError, NoteSignature, Verifier, parse_note

MAX_PROOF_LINES: Final = 63  # "The client MUST NOT send more than 63 consistency proof lines."
MAX_TREE_SIZE: Final = 2**63 - 1  # what a u64-minded peer (and SQLite's INTEGER) holds
_OLD: Final = re.compile(r"old (0|[1-9][0-9]{0,18})")  # "no leading zeroes"


class WitnessError(VaultError):
    """Root of the witness's errors (``daemon``'s root is :class:`VaultError`)."""


class Malformed(WitnessError):
    """The body is not an add-checkpoint request, or asks for the impossible (400)."""


class UnknownLog(WitnessError):
    """The checkpoint's origin is no log this witness is configured for (404)."""


class BadSignature(WitnessError):
    """No trusted key signed the checkpoint, or a line claiming one does not verify (403)."""


class Conflict(WitnessError):
    """The old size is not the size of the latest checkpoint cosigned for the log (409)."""

    def __init__(self, known_size: int) -> None:
        super().__init__(f"the latest checkpoint cosigned for this log has size {known_size}")
        self.known_size = known_size


class Inconsistent(WitnessError):
    """The checkpoint is not consistent with what the witness cosigned before (422)."""


@dataclass(frozen=True, slots=True)
class TreeHead:
    """What the witness knows of a log: the latest size and root it cosigned."""

    size: int
    root: bytes


EMPTY: Final = TreeHead(0, EMPTY_ROOT)  # "or zero if it never cosigned a checkpoint"


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """A well-formed add-checkpoint request (nothing verified yet)."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: Checkpoint
    text: str  # the checkpoint's note text, exactly as the log signed it
    signatures: tuple[NoteSignature, ...]

    @property
    def head(self) -> TreeHead:
        return TreeHead(self.checkpoint.size, self.checkpoint.root)


def _hash(line: str) -> bytes:
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    # canonical only: a hash has one encoding (no stray bits in the last character)
    if len(raw) != 32 or base64.b64encode(raw).decode() != line:
        raise Malformed(f"a consistency proof line is not one base64 SHA-256 hash: {line[:60]!r}")
    return raw


def parse(body: bytes) -> AddCheckpoint:
    """c2sp.org/tlog-witness, add-checkpoint: "an old size line, zero or more consistency
    proof lines, and an empty line, followed by a checkpoint", each line ending in U+000A."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("the body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise Malformed("no empty line between the old size and proof lines and the checkpoint")
    lines = head.split("\n")
    match = _OLD.fullmatch(lines[0])
    if match is None:
        raise Malformed(f"the first line is 'old <size>' in decimal: {lines[0][:60]!r}")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise Malformed(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = tuple(_hash(line) for line in lines[1:])
    try:
        note_text, signatures = parse_note(note)
        checkpoint = Checkpoint.parse(note_text)
    except NoteError as e:
        raise Malformed(f"the checkpoint: {e}") from None
    if checkpoint.text() != note_text:  # e.g. a root hash in a non-canonical base64
        raise Malformed("the checkpoint is not in its canonical form")
    old_size = int(match.group(1))
    if old_size > MAX_TREE_SIZE or checkpoint.size > MAX_TREE_SIZE:
        raise Malformed(f"a tree size is at most {MAX_TREE_SIZE}")
    return AddCheckpoint(
        old_size=old_size,
        proof=proof,
        checkpoint=checkpoint,
        text=note_text,
        signatures=tuple(signatures),
    )


def check_signatures(
    request: AddCheckpoint, trusted: Sequence[Verifier]
) -> tuple[NoteSignature, ...]:
    """The log's signature lines that verify. tlog-witness: "The witness MUST respond with
    a 403 Forbidden HTTP status code if either no signature from a trusted key for the
    origin is present, or a signature line's key name and ID match a trusted key but the
    signature itself fails to verify"; signatures of unknown keys are ignored."""
    keys = {(v.name, v.key_id): v for v in trusted}
    good: list[NoteSignature] = []
    for sig in request.signatures:
        v = keys.get((sig.name, sig.key_id))
        if v is None:
            continue
        if not v.verify(request.text.encode(), sig.signature):
            raise BadSignature(f"the signature of {sig.name} does not verify")
        good.append(sig)
    if not good:
        raise BadSignature(f"no key trusted for {request.checkpoint.origin!r} signed it")
    return tuple(good)


def check_request(request: AddCheckpoint) -> None:
    """The checks on the request alone, after its signature."""
    if request.old_size > request.checkpoint.size:
        # "The old size MUST be equal to or lower than the checkpoint size. Otherwise, the
        # witness MUST respond with a 400 Bad Request HTTP status code."
        raise Malformed(
            f"old size {request.old_size} is above the checkpoint's size {request.checkpoint.size}"
        )
    if request.checkpoint.size == 0 and request.checkpoint.root != EMPTY_ROOT:
        # "A checkpoint of size zero MUST have the root hash of the empty tree [...]
        # Otherwise, the witness MUST respond with a 422 Unprocessable Entity"
        raise Inconsistent("a checkpoint of size 0 has the root of the empty tree")


def check_against(request: AddCheckpoint, known: TreeHead) -> None:
    """The checks against the latest cosigned state; run under the origin's lock."""
    new = request.head
    if request.old_size != known.size:
        # "If it doesn't match, the witness MUST respond with a 409 Conflict"
        raise Conflict(known.size)
    if known.size == 0:
        if request.proof:
            # "If the proof is not empty when the old size is zero [...] 422"
            raise Inconsistent("from old size 0 the consistency proof is empty")
        return
    if new.size == known.size:
        if new.root != known.root:
            # "If the old size matches the checkpoint size, the witness MUST check that the
            # root hashes are also identical. If they don't match, [...] 422"
            raise Inconsistent(f"size {new.size} was cosigned with another root hash")
        if request.proof:
            raise Inconsistent("between equal sizes the consistency proof is empty")
        return
    try:  # RFC 6962 §2.1.2 (RFC 9162 §2.1.4.2), from the root the witness holds
        verify_consistency(known.size, new.size, known.root, new.root, request.proof)
    except ProofError as e:
        raise Inconsistent(f"the consistency proof does not verify: {e}") from None
