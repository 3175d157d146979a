"""The vault's database schema, versioned, and the migrations that reach the latest version.

Portable SQL (SQLite today, PostgreSQL behind the same store later): integer and text
columns, BLOBs for hashes and DER, no engine-specific types in the tables. Times are
RFC 3339 UTC text (``2026-11-30T08:03:12.123456Z``), sortable as text.

Evidence tables are append-only: a trigger refuses every UPDATE and DELETE on them, so that
a bug or a hurried operator cannot change what was stored. ``vault verify`` does not rely on
the triggers: it recomputes everything from the bytes (an attacker can drop a trigger).

- ``entries``: one row per leaf, dense ``idx`` from 0; ``leaf`` the exact RFC 8785 bytes.
- ``seals``: the RFC 3161 token of a leaf, written once when it comes (at the append, or
  later by the sealer); an entry without a row here is pending. ``tsa`` (v6): the URL of
  the TSA that sealed it.
- ``nodes``: the hashes of the tree's complete subtrees (level, index), written once.
- ``checkpoints``: every signed tree head, with its own token over the note's bytes.
- ``journal``: the access journal, hash-chained (``daemon.journal``).
- ``disclosures``: the personal data and the salts that open a leaf's commitments, and the
  keyed lookup of a student; the one table retention may delete from (never update).
- ``sessions``: the state of each session after each entry that changed it (derived from
  the leaves, kept so that the vault need not replay the log at start).
- ``idempotency``: which key made which entries (one row per deposit, covering the log).
- ``idempotency_bodies`` (v3): the hash of each deposit's body, to tell a replay from a
  reused key. A hash of a body holding an INE, a birth date and a name lets anyone with a
  copy test guesses of them, so it lives apart from the append-only deposit record and
  the purge destroys it with the disclosures it concerns.
- ``api_tokens``: bearer tokens, hashed; ``expires_at`` (v2) when one is granted for a
  time (an auditor's).
- ``retention_rules`` (v3): an establishment's retention period when it is not the
  default, in years or in days from the end of the session.
- ``legal_holds`` (v3): holds on an establishment (``lookup`` NULL) or on one student (by
  keyed lookup), suspending the purge; released, never deleted.
- ``cosignatures`` (v5): the witnesses' cosignature/v1 lines of each checkpoint, as each
  witness answered (``daemon.witnessing``), append-only.
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 6

APPEND_ONLY_TABLES: Final = (
    "entries",
    "seals",
    "nodes",
    "checkpoints",
    "journal",
    "sessions",
    "idempotency",
)

_V1: Final = """
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE entries (
    idx INTEGER PRIMARY KEY,
    establishment TEXT NOT NULL,
    kind TEXT NOT NULL,
    session_id TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    corrects INTEGER,
    leaf BLOB NOT NULL,
    leaf_hash BLOB NOT NULL
);
CREATE INDEX entries_by_session ON entries (establishment, session_id, idx);
CREATE INDEX entries_by_corrects ON entries (corrects) WHERE corrects IS NOT NULL;
CREATE TABLE seals (
    idx INTEGER PRIMARY KEY REFERENCES entries (idx),
    token BLOB NOT NULL,
    gen_time TEXT NOT NULL,
    sealed_at TEXT NOT NULL
);
CREATE TABLE nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL,
    token BLOB,
    created_at TEXT NOT NULL
);
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY,
    record TEXT NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE disclosures (
    idx INTEGER PRIMARY KEY REFERENCES entries (idx),
    establishment TEXT NOT NULL,
    lookup BLOB,
    body TEXT NOT NULL
);
CREATE INDEX disclosures_by_lookup ON disclosures (establishment, lookup, idx)
    WHERE lookup IS NOT NULL;
CREATE TABLE sessions (
    idx INTEGER PRIMARY KEY REFERENCES entries (idx),
    establishment TEXT NOT NULL,
    session_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    start_at TEXT NOT NULL,
    end_at TEXT NOT NULL,
    cancelled INTEGER NOT NULL
);
CREATE INDEX sessions_latest ON sessions (establishment, session_id, idx);
CREATE TABLE idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash BLOB NOT NULL,
    first_idx INTEGER NOT NULL,
    count INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE api_tokens (
    token_hash BLOB PRIMARY KEY,
    role TEXT NOT NULL,
    establishment TEXT,
    label TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


def append_only_triggers(table: str) -> str:
    """Triggers refusing UPDATE and DELETE on ``table`` (SQLite syntax; PostgreSQL's are in
    its backend, and there the vault's role has no UPDATE/DELETE grant either)."""
    return "\n".join(
        f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END;"
        for op in ("UPDATE", "DELETE")
    )


def _v1() -> str:
    triggers = "\n".join(append_only_triggers(t) for t in APPEND_ONLY_TABLES)
    no_update = (
        "CREATE TRIGGER disclosures_no_update BEFORE UPDATE ON disclosures "
        "BEGIN SELECT RAISE(ABORT, 'disclosures are never updated, only destroyed'); END;"
    )
    return _V1 + triggers + "\n" + no_update


# v2: a bearer token may expire (an establishment grants its funder's auditor a token for a
# time). NULL: it does not.
_V2: Final = "ALTER TABLE api_tokens ADD COLUMN expires_at TEXT;"

# v3: retention. The body hashes leave the append-only deposit record (see the module), and
# the rules and holds of retention get their tables.
_V3: Final = """
CREATE TABLE idempotency_bodies (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash BLOB NOT NULL,
    PRIMARY KEY (scope, key)
);
INSERT INTO idempotency_bodies SELECT scope, key, body_hash FROM idempotency;
ALTER TABLE idempotency DROP COLUMN body_hash;
CREATE INDEX idempotency_by_first ON idempotency (first_idx);
CREATE TRIGGER idempotency_bodies_no_update BEFORE UPDATE ON idempotency_bodies
BEGIN SELECT RAISE(ABORT, 'idempotency_bodies are never updated, only destroyed'); END;
CREATE TABLE retention_rules (
    establishment TEXT PRIMARY KEY,
    years INTEGER,
    days INTEGER,
    set_at TEXT NOT NULL,
    set_by TEXT NOT NULL,
    CHECK ((years IS NULL) <> (days IS NULL))
);
CREATE TABLE legal_holds (
    id INTEGER PRIMARY KEY,
    establishment TEXT NOT NULL,
    lookup BLOB,
    reason TEXT NOT NULL,
    placed_at TEXT NOT NULL,
    placed_by TEXT NOT NULL,
    released_at TEXT
);
CREATE TRIGGER legal_holds_no_delete BEFORE DELETE ON legal_holds
BEGIN SELECT RAISE(ABORT, 'legal holds are released, never deleted'); END;
"""

# v4: an establishment's entries of one kind by time — the trainer's counter-signatures
# around an audit's dates (the controls' "in two places at once") without reading every
# entry of the establishment.
_V4: Final = "CREATE INDEX entries_by_kind_time ON entries (establishment, kind, occurred_at);"

# v5: the witnesses' cosignatures of the checkpoints (C2SP tlog-cosignature): per checkpoint
# size and witness key (name and 4-byte key ID), the line as the witness answered it (no
# newline), the time it carries (POSIX seconds) and when the vault received it. Append-only
# like the log (a witness that cosigns the same checkpoint again adds nothing: the first
# line is kept). ``vault verify`` checks each line against the configured witness keys.
_V5: Final = """
CREATE TABLE cosignatures (
    size INTEGER NOT NULL REFERENCES checkpoints (size),
    witness TEXT NOT NULL,
    key_id BLOB NOT NULL,
    line TEXT NOT NULL,
    cosigned_at INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (size, witness, key_id)
);
""" + append_only_triggers("cosignatures")

# v6: which TSA sealed each entry (its URL, as configured: one appliance per site), so that
# an outage of one site's appliance shows in the log, and `vault verify` can say which TSA's
# roots a token chains to. NULL for the seals of earlier versions (one TSA then).
_V6: Final = "ALTER TABLE seals ADD COLUMN tsa TEXT;"

# MIGRATIONS[n] takes a database at version n to version n + 1 (n = 0: an empty file).
MIGRATIONS: Final = (_v1(), _V2, _V3, _V4, _V5, _V6)
