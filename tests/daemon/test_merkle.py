"""The Merkle algebra against transparency-dev's vectors, a naive reference, and properties."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon import merkle
from daemon.merkle import InMemoryTree, ProofError

VECTORS = Path(__file__).resolve().parents[1] / "data" / "merkle"


def load(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert files, f"no {kind} vectors in {VECTORS}"
    return [pytest.param(json.loads(f.read_text()), id=str(f.relative_to(VECTORS))) for f in files]


def b64(items: list[str] | None) -> list[bytes]:
    return [base64.b64decode(x) for x in items or []]


@pytest.mark.parametrize("case", load("inclusion"))
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    def check() -> None:
        merkle.verify_inclusion(
            case["leafIdx"], case["treeSize"], base64.b64decode(case["leafHash"] or ""),
            b64(case["proof"]), base64.b64decode(case["root"] or ""),
        )  # fmt: skip

    if case["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("case", load("consistency"))
def test_consistency_vectors(case: dict[str, Any]) -> None:
    def check() -> None:
        merkle.verify_consistency(
            case["size1"], case["size2"], base64.b64decode(case["root1"] or ""),
            base64.b64decode(case["root2"] or ""), b64(case["proof"]),
        )  # fmt: skip

    if case["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


def naive_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, recursively, over leaf hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_roots_and_every_proof_up_to_70_leaves() -> None:
    tree = InMemoryTree()
    hashes = leaves(70)
    for h in hashes:
        tree.append(h)
    for size in range(1, 71):
        r = tree.root(size)
        assert r == naive_root(hashes[:size])
        for i in range(size):
            merkle.verify_inclusion(i, size, hashes[i], tree.inclusion_proof(i, size), r)
        for first in range(1, size + 1):
            proof = tree.consistency_proof(first, size)
            merkle.verify_consistency(first, size, tree.root(first), r, proof)
    assert tree.root(0) == merkle.EMPTY_ROOT


def test_each_complete_subtree_is_written_once() -> None:
    tree = InMemoryTree()
    writes = sum(len(tree.append(h)) for h in leaves(1000))
    assert writes == len(tree.nodes) == 2 * 1000 - bin(1000).count("1")


@given(st.integers(1, 200), st.data())
def test_a_proof_verifies_iff_the_leaf_is_in_the_tree(size: int, data: st.DataObject) -> None:
    hashes = leaves(size)
    tree = InMemoryTree()
    for h in hashes:
        tree.append(h)
    r = tree.root()
    i = data.draw(st.integers(0, size - 1))
    proof = tree.inclusion_proof(i)
    merkle.verify_inclusion(i, size, hashes[i], proof, r)
    wrong_leaf = merkle.leaf_hash(b"not in the tree")
    with pytest.raises(ProofError):
        merkle.verify_inclusion(i, size, wrong_leaf, proof, r)
    if size > 1:
        j = data.draw(st.integers(0, size - 1).filter(lambda j: j != i))
        with pytest.raises(ProofError):
            merkle.verify_inclusion(j, size, hashes[i], proof, r)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
        with pytest.raises(ProofError):
            merkle.verify_inclusion(i, size, hashes[i], bad, r)
    first = data.draw(st.integers(1, size))
    cons = tree.consistency_proof(first)
    merkle.verify_consistency(first, size, tree.root(first), r, cons)
    if first < size:
        with pytest.raises(ProofError):
            merkle.verify_consistency(first, size, wrong_leaf, r, cons)


def test_proofs_outside_the_tree_are_refused() -> None:
    tree = InMemoryTree()
    for h in leaves(5):
        tree.append(h)
    with pytest.raises(ProofError):
        tree.inclusion_proof(5)
    with pytest.raises(ProofError):
        tree.consistency_proof(0)
    with pytest.raises(ProofError):
        tree.consistency_proof(6, 5)
