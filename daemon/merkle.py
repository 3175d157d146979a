"""RFC 9162 (RFC 6962) Merkle tree algebra: pure, small, over stored complete subtrees.

The vault stores the hash of every *complete* subtree — level L, index N covers leaves
[N·2^L, (N+1)·2^L), the numbering of C2SP tlog-tiles — each written once, when it completes
(:func:`new_nodes`). Every other hash (a root at any size, a proof) is computed from those
with O(log n) lookups through a ``node(level, index)`` callable: the tree is never
recomputed. The verifiers are RFC 9162 §2.1.3.2 and §2.1.4.2 as written, and pass every
transparency-dev vector (``tests/data/merkle/``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final

from daemon.errors import VaultError

Node = Callable[[int, int], bytes]  # (level, index) -> the complete subtree's hash

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({})


class ProofError(VaultError):
    """A proof that does not verify, or a proof asked for sizes that do not exist."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()  # RFC 9162 §2.1.1


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()  # RFC 9162 §2.1.1


def new_nodes(size: int, leaf: bytes, node: Node) -> list[tuple[int, int, bytes]]:
    """The complete subtrees appending ``leaf`` to a tree of ``size`` leaves completes:
    the leaf itself, then each parent whose right child it just completed."""
    out = [(0, size, leaf)]
    level, index, h = 0, size, leaf
    while index & 1:
        h = node_hash(node(level, index - 1), h)
        level, index = level + 1, index >> 1
        out.append((level, index, h))
    return out


def subtree_hash(start: int, end: int, node: Node) -> bytes:
    """MTH(D[start:end]) for a range that starts on a subtree boundary, as RFC 9162 splits
    it (the range may be incomplete at the right): its complete subtrees, combined from the
    right."""
    if end <= start:
        raise ProofError(f"empty range [{start}, {end})")
    parts: list[bytes] = []
    pos = start
    while pos < end:
        level = (end - pos).bit_length() - 1  # the largest power of two that fits…
        while pos % (1 << level):  # …and that ``pos`` is aligned to
            level -= 1
        parts.append(node(level, pos >> level))
        pos += 1 << level
    h = parts[-1]
    for left in reversed(parts[:-1]):
        h = node_hash(left, h)
    return h


def root(size: int, node: Node) -> bytes:
    return EMPTY_ROOT if size == 0 else subtree_hash(0, size, node)


def _split(n: int) -> int:
    """The largest power of two smaller than n (RFC 9162 §2.1.1, k)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(index: int, size: int, node: Node) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), leaf to root order."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree_hash(start + k, end, node))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, node))
            start += k
    return path[::-1]


def consistency_proof(first: int, second: int, node: Node) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(first, D[0:second]) for 0 < first ≤ second."""
    if not 0 < first <= second:
        raise ProofError(f"no consistency proof from size {first} to {second}")
    out: list[bytes] = []

    def subproof(m: int, start: int, end: int, whole: bool) -> None:
        n = end - start
        if m == n:
            if not whole:
                out.append(subtree_hash(start, end, node))
            return
        k = _split(n)
        if m <= k:
            subproof(m, start, start + k, whole)
            out.append(subtree_hash(start + k, end, node))
        else:
            subproof(m - k, start + k, end, False)
            out.append(subtree_hash(start, start + k, node))

    subproof(first, 0, second, True)
    return out


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root that ``proof`` leads to from ``leaf`` at ``index``."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != 32:
            raise ProofError("a proof hash is not 32 bytes")
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected: bytes
) -> None:
    if len(leaf) != 32 or len(expected) != 32:
        raise ProofError("the leaf hash and the root must be 32-byte SHA-256 hashes")
    if root_from_inclusion(index, size, leaf, proof) != expected:
        raise ProofError(f"the inclusion proof of index {index} does not lead to the root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2; sizes 0 and equal sizes as transparency-dev/merkle treats them."""
    if first > second:
        raise ProofError(f"size {first} is larger than {second}")
    if any(len(p) != 32 for p in proof) or len(first_root) != 32 or len(second_root) != 32:
        raise ProofError("the roots and proof hashes must be 32-byte SHA-256 hashes")
    if first == second:
        if proof:
            raise ProofError("equal sizes take an empty proof")
        if first_root != second_root:
            raise ProofError("equal sizes but different roots")
        return
    if first == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:  # first is a power of two: its root is the first node
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != first_root:
        raise ProofError(f"the consistency proof does not lead to the root of size {first}")
    if sr != second_root:
        raise ProofError(f"the consistency proof does not lead to the root of size {second}")


class InMemoryTree:
    """A tree in a dict of complete subtrees: for ``vault verify`` and the tests."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.size = 0

    def node(self, level: int, index: int) -> bytes:
        return self.nodes[level, index]

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append a leaf *hash*; the nodes it completed."""
        made = new_nodes(self.size, leaf, self.node)
        for level, index, h in made:
            self.nodes[level, index] = h
        self.size += 1
        return made

    def root(self, size: int | None = None) -> bytes:
        return root(self.size if size is None else size, self.node)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self.size if size is None else size, self.node)

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        return consistency_proof(first, self.size if second is None else second, self.node)
