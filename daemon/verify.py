"""``vault verify``: recompute everything the vault holds, trusting nothing it stored.

Opens the database read-only and checks, without relying on the triggers (whoever can
write the file can drop them):

1. **entries**: indices dense from 0; each leaf hash is ``SHA-256(0x00 ‖ leaf)``; each leaf
   is canonical RFC 8785 JSON of a ``horodate/entry/v1`` document; the indexed columns
   (establishment, kind, session, occurred_at, received_at, corrects) say what the leaf
   says; a disclosure, when present, opens the leaf's commitments.
2. **the tree**: rebuilt from the leaf hashes; every stored node equals the rebuilt one and
   none is missing or extra.
3. **checkpoints**: each signature against the vault's verifier key, its root against the
   rebuilt tree at its size, consistency from each to the next, and its token over
   ``SHA-256(note)`` (a checkpoint made while the TSA was down is a warning).
4. **seals**: each token verifies (signature, chain to the TSA roots at genTime, imprint =
   the entry's leaf hash) and its ``gen_time`` column is the token's.
5. **sessions** and **idempotency** rows point at entries that exist and say what they say.
6. **the access journal**: the hash chain, from the first record to the last.
7. **the witnesses' cosignatures**, given their keys (``--witness-vkey``, or the
   configuration's ``[[vault.witnesses]]``): each stored line of those witnesses verifies
   over its checkpoint (a bad one is named and fails); which checkpoints meet the quorum;
   none meeting it fails — the log's history is then witnessed by no one
   (:mod:`daemon.witnessing.checking`).

What it cannot prove: that nothing was withheld before being deposited; nor, alone, that a
whole database was not rebuilt by someone holding the vault's signing key and able to get
fresh tokens — that needs a checkpoint held elsewhere (an auditor's bundle, a witness):
with the witnesses' keys, a rebuilt history lacks their cosignatures (or carries lines that
no longer verify); entries after the latest witnessed checkpoint are reported as such.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon import merkle
from daemon.clock import parse_time, utc_text
from daemon.errors import VaultError
from daemon.journal import check_chain
from daemon.leaf import LEAF_FORMAT, canonical, open_leaf, student_lookup
from daemon.note import Checkpoint, NoteError, Verifier, open_note
from daemon.retention.purge import ACTION as PURGE_ACTION
from daemon.retention.rules import parse_ranges
from daemon.store import DB_NAME, Reader
from daemon.witnessing.checking import check_stored
from daemon.witnessing.policy import Policy, WitnessingError
from timestamping.errors import TimestampingError
from timestamping.reply import parse_reply
from timestamping.verify import verify_reply

PROGRESS_EVERY = 10_000


class Broken(VaultError):
    """The first thing that does not hold."""


@dataclass
class VerifyReport:
    entries: int = 0
    sealed: int = 0
    pending: int = 0
    nodes: int = 0
    checkpoints: int = 0
    checkpoints_time_stamped: int = 0
    journal_records: int = 0
    cosignatures: int = 0  # the witnesses' cosignatures verified
    witnessed: list[int] = field(default_factory=list)  # checkpoint sizes meeting the policy
    witness_policy: str | None = None  # "Q of N witnesses"; None: no witness key given
    warnings: list[str] = field(default_factory=list)
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def lines(self) -> list[str]:
        return [
            f"entries: {self.entries} leaves recomputed, {self.sealed} sealed, "
            f"{self.pending} pending",
            f"tree: {self.nodes} stored nodes match the tree rebuilt from the leaves",
            f"checkpoints: {self.checkpoints} signatures, roots and consistency checked, "
            f"{self.checkpoints_time_stamped} time-stamped",
            f"tokens: {self.sealed + self.checkpoints_time_stamped} verified "
            "(signature, chain at genTime, imprint)",
            f"access journal: {self.journal_records} records, hash chain intact",
        ] + (
            []
            if self.witness_policy is None
            else [
                f"witnesses: {self.cosignatures} cosignatures verified; {len(self.witnessed)} "
                f"of {self.checkpoints} checkpoints meet the policy ({self.witness_policy}), "
                f"the latest of size {self.witnessed[-1] if self.witnessed else '-'}"
            ]
        )


def verify_vault(
    data_dir: Path,
    *,
    ca_pem: bytes | None = None,
    progress: Callable[[str], None] | None = None,
    witnesses: Policy | None = None,
) -> VerifyReport:
    """``witnesses``: the witness keys and quorum the stored cosignatures are checked
    against (None: they are not checked, and a note says so)."""
    report = VerifyReport()
    path = data_dir / DB_NAME
    try:
        if not path.exists():
            raise Broken(f"no vault database in {data_dir}")
        if ca_pem is None:
            ca_file = data_dir / "keys" / "tsa-ca.pem"
            if not ca_file.exists():
                raise Broken("no TSA roots to check the tokens: give --tsa-ca PEM")
            ca_pem = ca_file.read_bytes()
        vkey_file = data_dir / "keys" / "vault.vkey"
        if not vkey_file.exists():
            raise Broken(f"no verifier key {vkey_file}")
        verifier = Verifier.from_key_string(vkey_file.read_text().strip())
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            lookup_file = data_dir / "keys" / "lookup.key"
            secret = None
            if lookup_file.exists():
                secret = base64.b64decode(lookup_file.read_text().strip())
            else:
                report.warnings.append("no lookup key: the students' lookups are not checked")
            _Check(conn, ca_pem, verifier, report, progress or (lambda _: None), secret).run()
            _witnessed(conn, witnesses, report)
        finally:
            conn.close()
    except (Broken, NoteError) as e:
        report.failure = str(e)
    except (sqlite3.Error, OSError) as e:
        report.failure = f"cannot read the vault: {e}"
    return report


class _Check:
    def __init__(
        self,
        conn: sqlite3.Connection,
        ca_pem: bytes,
        verifier: Verifier,
        report: VerifyReport,
        progress: Callable[[str], None],
        lookup_secret: bytes | None,
    ) -> None:
        self.conn, self.ca_pem, self.verifier = conn, ca_pem, verifier
        self.report, self.progress = report, progress
        self.tree = merkle.InMemoryTree()
        self.leaves: dict[int, dict[str, Any]] = {}  # idx -> the leaf's establishment/session
        self.session_rows: dict[int, tuple[Any, ...]] = {}  # what the sessions table must hold
        self._states: dict[tuple[str, Any], tuple[Any, ...]] = {}
        self.lookup_secret = lookup_secret

    def run(self) -> None:
        self.entries()
        self.nodes()
        self.checkpoints()
        self.seals()
        self.sessions()
        self.idempotency()
        self.journal()

    def destroyed(self) -> set[int]:
        """The entries whose disclosures the journal says retention destroyed (the journal's
        chain is checked by :meth:`journal`: a forged record breaks it)."""
        out: set[int] = set()
        for (record,) in self.conn.execute("SELECT record FROM journal ORDER BY seq"):
            r = json.loads(record)
            if r.get("action") == PURGE_ACTION:
                found = _DESTROYED.search(str(r.get("target") or ""))
                if found is None:
                    raise Broken(f"journal: a {PURGE_ACTION} record that names no entries")
                out |= parse_ranges(found.group(1))
        return out

    def entries(self) -> None:
        total = self.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        destroyed = self.destroyed()
        disclosures = dict(self.conn.execute("SELECT idx, body FROM disclosures"))
        disclosure_est = {
            r[0]: (r[1], None if r[2] is None else r[2] if isinstance(r[2], bytes) else str(r[2]))
            for r in self.conn.execute("SELECT idx, establishment, lookup FROM disclosures")
        }
        expected = 0
        rows = self.conn.execute(
            "SELECT idx, establishment, kind, session_id, occurred_at, received_at, corrects, "
            "leaf, leaf_hash FROM entries ORDER BY idx"
        )
        for idx, est, kind, sid, occurred, received, corrects, leaf, stored_hash in rows:
            if idx != expected:
                raise Broken(f"entry {expected}: missing (the next entry found is {idx})")
            leaf = bytes(leaf)
            if merkle.leaf_hash(leaf) != bytes(stored_hash):
                raise Broken(f"entry {idx}: leaf_hash does not match its leaf bytes")
            try:
                doc = json.loads(leaf)
            except ValueError:
                raise Broken(f"entry {idx}: the leaf is not JSON") from None
            if (
                not isinstance(doc, dict)
                or doc.get("format") != LEAF_FORMAT
                or canonical(doc) != leaf
            ):
                raise Broken(f"entry {idx}: the leaf is not a canonical {LEAF_FORMAT} document")
            session = doc.get("session") or {}
            said = {
                "establishment": doc.get("establishment"),
                "kind": doc.get("kind"),
                "session_id": session.get("id"),
                "occurred_at": _utc(doc.get("occurred_at")),
                "received_at": doc.get("received_at"),
                "corrects": doc.get("corrects"),
            }
            columns = {
                "establishment": est,
                "kind": kind,
                "session_id": sid,
                "occurred_at": occurred,
                "received_at": received,
                "corrects": corrects,
            }
            for name, value in columns.items():
                if value != said[name]:
                    raise Broken(
                        f"entry {idx}: column {name} ({value!r}) is not what the leaf says"
                    )
            if idx in disclosures and idx in destroyed:
                raise Broken(f"disclosure {idx}: journaled as destroyed, yet it is there")
            if idx in disclosures:
                d_est, lookup = disclosure_est[idx]
                if d_est != est:
                    raise Broken(f"disclosure {idx}: establishment is not the entry's")
                try:
                    opened = open_leaf(leaf, json.loads(disclosures[idx]))
                except (VaultError, ValueError, TypeError, AttributeError) as e:
                    raise Broken(f"disclosure {idx}: {e}") from None
                student = opened.get("student")
                if self.lookup_secret is not None and isinstance(student, dict):
                    want = student_lookup(
                        self.lookup_secret,
                        est,
                        str(student.get("ine")),
                        str(student.get("birth_date")),
                    )
                    if lookup != want:
                        raise Broken(f"disclosure {idx}: lookup is not the student's")
                elif not isinstance(student, dict) and lookup is not None:
                    raise Broken(f"disclosure {idx}: a lookup but no student")
            elif _has_commitments(doc) and idx not in destroyed:
                raise Broken(f"entry {idx}: its disclosure is gone (no destruction is journaled)")
            self._replay_session(idx, est, kind, session)
            self.leaves[idx] = {"establishment": est, "session": session}
            self.tree.append(merkle.leaf_hash(leaf))
            expected += 1
            if expected % PROGRESS_EVERY == 0:
                self.progress(f"entries {expected}/{total}")
        extra = set(disclosures) - set(self.leaves)
        if extra:
            raise Broken(f"disclosure {min(extra)}: no such entry")
        self.report.entries = expected

    def _replay_session(self, idx: int, est: str, kind: str, s: dict[str, Any]) -> None:
        """The session state the sequencer kept (daemon.rules.next_state), replayed."""
        if kind == "correction":
            return
        key = (est, s.get("id"))
        state = self._states.get(key)
        version, start, end = s.get("version"), _utc(s.get("start")), _utc(s.get("end"))
        if kind == "session_moved" or state is None:
            new = (version, start, end, kind == "session_cancelled")
        elif kind == "session_cancelled":
            new = (*state[:3], True)
        else:
            new = state
        if new != state:
            self._states[key] = new
            self.session_rows[idx] = (est, s.get("id"), *new)

    def nodes(self) -> None:
        stored = 0
        for level, idx, h in self.conn.execute("SELECT level, idx, hash FROM nodes"):
            want = self.tree.nodes.get((level, idx))
            if want is None:
                raise Broken(f"node ({level}, {idx}): not a complete subtree of the tree")
            if bytes(h) != want:
                raise Broken(f"node ({level}, {idx}): hash does not match the rebuilt tree")
            stored += 1
        if stored != len(self.tree.nodes):
            raise Broken(f"nodes: {len(self.tree.nodes) - stored} complete subtrees are missing")
        self.report.nodes = stored

    def checkpoints(self) -> None:
        previous: Checkpoint | None = None
        for size, note, token, _created in self.conn.execute(
            "SELECT size, note, token, created_at FROM checkpoints ORDER BY size"
        ):
            text, _ = open_note(note, [self.verifier])
            cp = Checkpoint.parse(text)
            if cp.origin != self.verifier.name:
                raise Broken(f"checkpoint {size}: origin {cp.origin!r} is not the vault's name")
            if cp.size != size:
                raise Broken(f"checkpoint {size}: the note says size {cp.size}")
            if size > self.tree.size:
                raise Broken(f"checkpoint {size}: larger than the tree ({self.tree.size} entries)")
            if self.tree.root(size) != cp.root:
                raise Broken(
                    f"checkpoint {size}: root does not match the tree rebuilt from the entries"
                )
            if previous is not None and previous.size > 0:
                proof = self.tree.consistency_proof(previous.size, size)
                try:
                    merkle.verify_consistency(previous.size, size, previous.root, cp.root, proof)
                except merkle.ProofError as e:
                    raise Broken(
                        f"checkpoint {size}: not consistent with checkpoint {previous.size}: {e}"
                    ) from None
            if token is None:
                self.report.warnings.append(
                    f"checkpoint {size}: not time-stamped (the TSA was down)"
                )
            else:
                self._token(
                    bytes(token), hashlib.sha256(note.encode()).digest(), f"checkpoint {size}"
                )
                self.report.checkpoints_time_stamped += 1
            previous = cp
            self.report.checkpoints += 1

    def seals(self) -> None:
        sealed = set()
        for idx, token, gen_time in self.conn.execute(
            "SELECT idx, token, gen_time FROM seals ORDER BY idx"
        ):
            if idx not in self.leaves:
                raise Broken(f"seal {idx}: no such entry")
            token = bytes(token)
            info = self._token(token, self.tree.nodes[0, idx], f"seal {idx}")
            if utc_text(info) != gen_time:
                raise Broken(f"seal {idx}: column gen_time is not the token's genTime")
            sealed.add(idx)
            if len(sealed) % PROGRESS_EVERY == 0:
                self.progress(f"tokens {len(sealed)}/{self.report.entries}")
        self.report.sealed = len(sealed)
        self.report.pending = self.report.entries - len(sealed)
        if self.report.pending:
            self.report.warnings.append(
                f"{self.report.pending} entries still wait for their token (pending)"
            )

    def _token(self, der: bytes, imprint: bytes, what: str) -> Any:
        try:
            verify_reply(der, message_imprint=imprint, ca_pem=self.ca_pem)
            info = parse_reply(der).info
        except TimestampingError as e:
            raise Broken(f"{what}: the token does not verify: {e}") from None
        assert info is not None
        return info.gen_time

    def sessions(self) -> None:
        stored = {}
        for idx, est, sid, version, start, end, cancelled in self.conn.execute(
            "SELECT * FROM sessions"
        ):
            stored[idx] = (est, sid, version, start, end, bool(cancelled))
        for idx in sorted(set(stored) | set(self.session_rows)):
            if stored.get(idx) != self.session_rows.get(idx):
                raise Broken(f"session row {idx}: not the state the entries give (replayed)")

    def idempotency(self) -> None:
        """Each deposit wrote one row naming its entries: together they cover the log once."""
        covered = 0
        rows = self.conn.execute(
            "SELECT scope, key, first_idx, count FROM idempotency ORDER BY first_idx"
        )
        for scope, key, first, count in rows:
            if first != covered or count < 1 or first + count > self.report.entries:
                raise Broken(
                    f"idempotency key {key!r} ({scope}): entries {first}+{count} do not follow"
                )
            for idx in range(first, first + count):
                if scope != f"establishment:{self.leaves[idx]['establishment']}":
                    raise Broken(f"idempotency key {key!r}: entry {idx} is not of {scope}")
            covered += count
        if covered != self.report.entries:
            raise Broken(f"idempotency: entries from {covered} have no deposit record")

    def promises(self, records: list[dict[str, Any]]) -> None:
        """What the journal says happened must still be there: every entry of a deposit
        answered 201 is sealed, every journaled seal and checkpoint exists."""
        sealed = {r[0] for r in self.conn.execute("SELECT idx FROM seals")}
        sizes = {r[0] for r in self.conn.execute("SELECT size FROM checkpoints")}
        deposits = dict(self.conn.execute("SELECT first_idx, count FROM idempotency"))
        for r in records:
            target = str(r.get("target") or "")
            if (
                r.get("action") == "POST /v1/entries"
                and r.get("outcome") == "ok"
                and r.get("status") == 201
            ):
                first = int(target.removeprefix("entries/"))
                for idx in range(first, first + deposits.get(first, 1)):
                    if idx not in sealed:
                        raise Broken(f"entry {idx}: answered 201 (sealed) but its seal is gone")
            elif r.get("action") == "seal":
                for idx in map(int, target.removeprefix("entries ").split(",")):
                    if idx not in sealed:
                        raise Broken(f"entry {idx}: journaled as sealed but its seal is gone")
            elif r.get("action") == "checkpoint" and (
                int(target.removeprefix("checkpoints/")) not in sizes
            ):
                raise Broken(f"{target}: journaled but gone")

    def journal(self) -> None:
        rows = [
            (int(seq), str(record).encode(), bytes(link))
            for seq, record, link in self.conn.execute(
                "SELECT seq, record, hash FROM journal ORDER BY seq"
            )
        ]
        try:
            check_chain(rows)
        except VaultError as e:
            raise Broken(str(e)) from None
        self.report.journal_records = len(rows)
        self.promises([json.loads(r[1]) for r in rows])


def _witnessed(conn: sqlite3.Connection, policy: Policy | None, report: VerifyReport) -> None:
    """Step 7: the stored cosignatures against the witness keys given (see the module)."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cosignatures'"
    ).fetchone()
    try:
        found = check_stored(Reader(conn), policy or Policy()) if has_table else None
    except WitnessingError as e:
        raise Broken(str(e)) from None
    if policy is None or not policy.verifiers:
        if found is not None and found.unchecked:
            report.warnings.append(
                f"{found.unchecked} witness cosignatures not checked: give the witnesses' keys "
                "(--witness-vkey, or [[vault.witnesses]] in --config)"
            )
        return
    report.witness_policy = f"{policy.quorum} of {len(policy.verifiers)} witnesses"
    if found is None:
        found_sizes: list[int] = []
    else:
        found_sizes = found.witnessed
        report.cosignatures = sum(found.verified.values())
        if found.unchecked:
            report.warnings.append(
                f"{found.unchecked} cosignatures of other witnesses than those given: unchecked"
            )
    report.witnessed = found_sizes
    if report.checkpoints and not found_sizes:
        raise Broken(
            f"witnesses: no checkpoint has the cosignatures the policy asks "
            f"({report.witness_policy}): the log's history is witnessed by no one"
        )
    latest = conn.execute("SELECT MAX(size) FROM checkpoints").fetchone()[0]
    if found_sizes and latest is not None and found_sizes[-1] < latest:
        report.warnings.append(
            f"entries from {found_sizes[-1]} on are in no witnessed checkpoint yet (the latest "
            f"witnessed has size {found_sizes[-1]}, the latest checkpoint {latest})"
        )


_DESTROYED = re.compile(r"entries ([0-9,-]+) \(")


def _has_commitments(doc: dict[str, Any]) -> bool:
    return any(
        isinstance(v, dict) and "commitment" in v
        for v in (
            doc.get("student"),
            (doc.get("teacher") or {}).get("name"),
            (doc.get("author") or {}).get("name"),
        )
    )


def _utc(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    try:
        return utc_text(parse_time(text))
    except ValueError:
        return None
