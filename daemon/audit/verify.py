"""``horodate audit verify``: every check of a bundle, by this package's own code.

The bundle's ``check.py`` is the auditor's (standard library and ``openssl``); this is the
second opinion, written against other code — the vault's leaf, Merkle, signed-note and
RFC 3161 modules, rfc3161-client for the tokens — so that a bug in one checker is caught
by the other. Each check is a line of the report; the first failure of each kind names
the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon import merkle
from daemon.audit.tlog_proof import TlogProof
from daemon.errors import VaultError
from daemon.leaf import open_leaf
from daemon.note import Verifier, verify_checkpoint
from daemon.witnessing.policy import Policy, WitnessingError, split_cosigned
from timestamping.errors import TimestampingError
from timestamping.verify import verify_reply

_ENTRY = re.compile(r"entries/(0|[1-9][0-9]*)\.bin")
MAX_BUNDLE_BYTES = 2 * 1024**3
PARALLEL_FROM = 200  # entries: below, forking costs more than it saves


@dataclass
class BundleReport:
    checks: list[tuple[bool, str]] = field(default_factory=list)
    entries: int = 0
    pending: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not checked, and why

    @property
    def ok(self) -> bool:
        return all(good for good, _ in self.checks)

    def add(self, good: bool, what: str) -> None:
        self.checks.append((good, what))


def _read_zip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist() if not n.endswith("/")}


def verify_bundle(
    data: bytes,
    *,
    ca_pem: bytes | None = None,
    vkey: str | None = None,
    witness_vkeys: Sequence[str] = (),
    witness_quorum: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    processes: int | None = 1,
) -> BundleReport:
    """Check a bundle (the zip's bytes); ``ca_pem``/``vkey`` replace the bundle's own.
    ``witness_vkeys``/``witness_quorum``: the witnesses whose cosignatures the checkpoint
    must carry, and how many (see :func:`_witnesses`).
    ``processes`` > 1 checks the entries in that many forked processes (the tokens'
    signatures are most of the time); None: one per CPU for a bundle of at least
    :data:`PARALLEL_FROM` entries (the command line's default)."""
    out = BundleReport()
    try:
        files = _read_zip(data)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        out.add(False, f"not a readable zip: {e}")
        return out
    try:
        _sums(files, out)
        ca = ca_pem if ca_pem is not None else files["certs/ca.pem"]
        verifier = Verifier.from_key_string((vkey or files["vault.vkey"].decode()).strip())
        note = files["checkpoint.txt"].decode()
        checkpoint = verify_checkpoint(note, verifier)
        out.add(True, f"checkpoint.txt: signed by {verifier.name}, size {checkpoint.size}")
        text, signed, cosignatures = split_cosigned(note, verifier)
        if "checkpoint.tsr" in files:
            verify_reply(
                files["checkpoint.tsr"],
                message_imprint=hashlib.sha256(signed.encode()).digest(),
                ca_pem=ca,
            )
            out.add(True, "checkpoint.tsr: the checkpoint's token verifies")
        _witnesses(files, text, cosignatures, witness_vkeys, witness_quorum, out)
    except KeyError as e:
        out.add(False, f"{e.args[0]} is missing")
        return out
    except (VaultError, TimestampingError, ValueError) as e:
        out.add(False, f"checkpoint: {e}")
        return out
    indices = sorted(int(m.group(1)) for n in files if (m := _ENTRY.fullmatch(n)))
    hashes: dict[int, str] = {}
    failures: list[str] = []
    job = _EntryJob(files, checkpoint.size, checkpoint.root, note, ca)
    for n, (idx, digest, failure) in enumerate(_checked(job, indices, processes)):
        if digest is not None:
            hashes[idx] = digest
        if failure is not None:
            failures.append(failure)
        elif digest is not None and f"tokens/{idx}.tsr" not in files:
            out.pending.append(idx)
        if progress is not None:
            progress(n + 1, len(indices))
    for f in failures:
        out.add(False, f)
    out.entries = len(indices)
    sealed = len(hashes) - len(out.pending)
    out.add(
        not failures,
        f"{len(hashes)}/{len(indices)} entries: canonical, disclosures open their commitments, "
        f"included in the signed tree; {sealed} tokens verified over their leaf hash",
    )
    _report_matches(files, hashes, out)
    return out


def _witnesses(
    files: dict[str, bytes],
    text: str,
    lines: list[str],
    vkeys: Sequence[str],
    quorum: int | None,
    out: BundleReport,
) -> None:
    """The witnesses' cosignatures on checkpoint.txt. Given keys (``--witness-vkey``, or
    ``--witness-quorum`` alone with the bundle's ``witnesses.vkey``), the checkpoint must
    carry the quorum's cosignatures: a forked or rolled-back log's checkpoint does not. With
    the bundle's own keys only, each cosignature is checked and a short quorum is a note
    (the bundle's keys prove its consistency, not who witnessed it). A line that claims a
    witness's key and does not verify always fails."""
    explicit = bool(vkeys) or quorum is not None
    keys = list(vkeys) or [
        k for k in files.get("witnesses.vkey", b"").decode().splitlines() if k.strip()
    ]
    if not keys:
        if lines:
            out.notes.append(
                f"checkpoint.txt carries {len(lines)} cosignature line(s), not checked: give "
                "the witnesses' keys (--witness-vkey)"
            )
        return
    try:
        policy = Policy.of(keys, quorum)
        result = policy.check(text, lines)
    except WitnessingError as e:
        out.add(False, f"checkpoint.txt: {e}")
        return
    for bad in result.bad:
        out.add(False, f"checkpoint.txt: {bad}")
    if result.bad:
        return
    said = (
        f"cosigned by {len(result.cosignatures)} of {len(policy.verifiers)} witnesses "
        f"({', '.join(result.by) or 'none'}); the policy asks {policy.quorum}"
    )
    if result.meets_policy:
        out.add(True, f"checkpoint.txt: {said}")
    elif explicit:
        out.add(False, f"checkpoint.txt: {said}: not a witnessed checkpoint")
    else:
        out.notes.append(f"checkpoint.txt: {said} (the bundle's witnesses.vkey)")
    if not explicit:
        out.notes.append(
            "witness keys taken from the bundle (witnesses.vkey): give the witnesses' "
            "published keys with --witness-vkey to prove who witnessed it"
        )


def _sums(files: dict[str, bytes], out: BundleReport) -> None:
    listed = {}
    for line in files["SHA256SUMS"].decode().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    changed = [n for n, d in listed.items() if hashlib.sha256(files.get(n, b"")).hexdigest() != d]
    extra = sorted(set(files) - set(listed) - {"SHA256SUMS"})
    if changed:
        out.add(False, f"SHA256SUMS: {', '.join(sorted(changed))} changed or missing")
    elif extra:
        out.add(False, f"SHA256SUMS: {', '.join(extra)} not listed")
    else:
        out.add(True, f"SHA256SUMS: {len(listed)} files as listed")


@dataclass(frozen=True, slots=True)
class _EntryJob:
    files: dict[str, bytes]
    size: int
    root: bytes
    note: str
    ca: bytes

    def __call__(self, idx: int) -> tuple[int, str | None, str | None]:
        """(index, leaf hash hex or None, failure or None)."""
        try:
            return idx, _entry(self.files, idx, self.size, self.root, self.note, self.ca), None
        except KeyError as e:
            return idx, None, f"entry {idx}: {e.args[0]} is missing"
        except (VaultError, TimestampingError, ValueError) as e:
            return idx, None, f"entry {idx}: {e}"


_JOB: _EntryJob | None = None  # the forked processes' copy of the job (inherited, not sent)


def _in_child(idx: int) -> tuple[int, str | None, str | None]:
    assert _JOB is not None
    return _JOB(idx)


def _checked(
    job: _EntryJob, indices: list[int], processes: int | None
) -> Iterator[tuple[int, str | None, str | None]]:
    """Each entry checked, in order: here, or in ``processes`` forked processes (fork, so
    that the bundle's files are shared rather than sent; only from a single-threaded
    caller, the command line)."""
    global _JOB
    if processes is None:
        processes = (os.cpu_count() or 1) if len(indices) >= PARALLEL_FROM else 1
    if processes <= 1 or len(indices) < 2 * processes:
        yield from map(job, indices)
        return
    _JOB = job
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(processes) as pool:
            yield from pool.imap(
                _in_child, indices, chunksize=max(1, len(indices) // (8 * processes))
            )
    finally:
        _JOB = None


def _entry(files: dict[str, bytes], idx: int, size: int, root: bytes, note: str, ca: bytes) -> str:
    leaf = files[f"entries/{idx}.bin"]
    disclosure = files.get(f"disclosures/{idx}.json")
    open_leaf(leaf, json.loads(disclosure) if disclosure else {})
    h = merkle.leaf_hash(leaf)
    proof = TlogProof.parse(files[f"proofs/{idx}.tlog-proof"].decode())
    if proof.index != idx:
        raise VaultError(f"proofs/{idx}.tlog-proof proves entry {proof.index}")
    if proof.checkpoint != note:
        raise VaultError(f"proofs/{idx}.tlog-proof is against another checkpoint")
    merkle.verify_inclusion(idx, size, h, list(proof.hashes), root)
    token = files.get(f"tokens/{idx}.tsr")
    if token is not None:
        verify_reply(token, message_imprint=h, ca_pem=ca)
    return h.hex()


def _report_matches(files: dict[str, bytes], hashes: dict[int, str], out: BundleReport) -> None:
    try:
        report: Any = json.loads(files["report.json"])
        listed = {int(e["index"]): e["leaf_hash"] for e in report["entries"]}
    except (KeyError, TypeError, ValueError) as e:
        out.add(False, f"report.json: unreadable ({e})")
        return
    if listed != hashes:
        out.add(False, "report.json: does not list exactly the bundle's entries")
    else:
        out.add(True, "report.json: lists exactly the bundle's entries")
