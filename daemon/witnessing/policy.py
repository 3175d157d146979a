"""Which witnesses the vault submits its checkpoints to, and when a checkpoint counts: pure.

A witness is a URL and a cosignature/v1 verifier key (c2sp.org/tlog-cosignature: the key
that signs its cosignatures, ``<name>+<hex key ID>+base64(0x04 ‖ key)``). The *policy* is
those keys and a quorum: a checkpoint counts (it is *witnessed*) once at least ``quorum``
distinct configured witnesses have cosigned it. The default quorum is half the witnesses,
rounded up — 1 of 1, 1 of 2, 2 of 3 — see docs/adr/0011-witness-quorum.md for why, and for
when to ask more.

A cosigned checkpoint is the vault's signed note with the witnesses' cosignature lines
appended after the vault's own signature line (c2sp.org/signed-note allows any number of
signature lines; a verifier ignores the lines of keys it does not know).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from daemon.errors import VaultError
from daemon.note import NoteError, NoteSignature, Verifier, parse_note
from daemon.witness.cosignature import CosignatureVerifier

DEFAULT_TIMEOUT_S: Final = 5.0
DEFAULT_RETRY_INTERVAL_S: Final = 10.0
_WITNESS_KEYS: Final = frozenset({"url", "vkey"})


class WitnessingError(VaultError):
    """The witnesses' configuration is wrong, or a cosignature does not hold."""


def default_quorum(witnesses: int) -> int:
    """Half the witnesses, rounded up (at least 1): 1 of 1, 1 of 2, 2 of 3, 2 of 4."""
    return max(1, (witnesses + 1) // 2)


@dataclass(frozen=True, slots=True)
class Witness:
    """One witness: where to submit (``<url>/add-checkpoint``) and the key it cosigns with."""

    url: str
    verifier: CosignatureVerifier

    @classmethod
    def parse(cls, url: str, vkey: str) -> Witness:
        if not url.startswith(("http://", "https://")):
            raise WitnessingError(f"witness URL {url!r}: http:// or https://")
        try:
            verifier = CosignatureVerifier.from_key_string(vkey)
        except NoteError as e:
            raise WitnessingError(f"witness {url}: its vkey: {e}") from e
        return cls(url=url.rstrip("/"), verifier=verifier)

    @property
    def name(self) -> str:
        return self.verifier.name


@dataclass(frozen=True, slots=True)
class Cosignature:
    """One witness's cosignature/v1 line that verifies over a checkpoint."""

    witness: str  # the key name
    key_id: bytes  # 4 bytes
    timestamp: int  # POSIX seconds, as the witness signed it
    line: str  # without its newline


@dataclass(frozen=True, slots=True)
class Cosigned:
    """What the cosignature lines of one checkpoint amount to under a policy."""

    cosignatures: tuple[Cosignature, ...]  # one per witness of the policy, in its order
    bad: tuple[str, ...]  # why a line claiming a policy witness's key does not verify
    quorum: int
    witnesses: int  # how many the policy knows

    @property
    def by(self) -> list[str]:
        return [c.witness for c in self.cosignatures]

    @property
    def lines(self) -> list[str]:
        return [c.line for c in self.cosignatures]

    @property
    def meets_policy(self) -> bool:
        return self.witnesses > 0 and len(self.cosignatures) >= self.quorum

    def http_headers(self) -> dict[str, str]:
        """What ``GET /v1/checkpoint`` says beside the note (its body stays the note)."""
        return {
            "Horodate-Witnessed": "true" if self.meets_policy else "false",
            "Horodate-Cosigned-By": ", ".join(quote(name, safe="/.:-_@") for name in self.by),
            "Horodate-Witness-Quorum": f"{self.quorum} of {self.witnesses}",
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "cosigned_by": self.by,
            "witnesses": self.witnesses,
            "quorum": self.quorum,
            "meets_policy": self.meets_policy,
        }


@dataclass(frozen=True, slots=True)
class Policy:
    """The witness keys a client trusts, and how many of them must cosign a checkpoint."""

    verifiers: tuple[CosignatureVerifier, ...] = ()
    quorum: int = 1

    @classmethod
    def of(cls, vkeys: Iterable[str], quorum: int | None = None) -> Policy:
        """The policy of these vkeys (the default quorum when ``quorum`` is None)."""
        try:
            verifiers = tuple(CosignatureVerifier.from_key_string(k) for k in vkeys)
        except NoteError as e:
            raise WitnessingError(f"a witness vkey: {e}") from e
        return cls.checked(verifiers, quorum)

    @classmethod
    def checked(cls, verifiers: tuple[CosignatureVerifier, ...], quorum: int | None) -> Policy:
        names = [v.name for v in verifiers]
        if len(set(names)) != len(names):
            raise WitnessingError(f"a witness is named twice among {names}")
        q = default_quorum(len(verifiers)) if quorum is None else quorum
        if verifiers and not 1 <= q <= len(verifiers):
            raise WitnessingError(f"witness quorum {q}: from 1 to {len(verifiers)}")
        return cls(verifiers=verifiers, quorum=q)

    def check(self, checkpoint_text: str, lines: Sequence[str]) -> Cosigned:
        """The policy's witnesses whose line in ``lines`` cosigns ``checkpoint_text``.

        Lines of other keys are left out (signed-note: ignore unknown keys). A line that
        claims a witness's key and does not verify goes to :attr:`Cosigned.bad`, naming the
        witness: a tampered or forged cosignature is the caller's error to report, never
        just "absent". Raises :class:`WitnessingError` for lines that are not signature
        lines at all."""
        signatures = _signatures(checkpoint_text, lines)
        found: dict[str, Cosignature] = {}
        bad: list[str] = []
        for v in self.verifiers:
            for sig in signatures:
                try:
                    timestamp = v.verify(checkpoint_text, sig)
                except NoteError as e:
                    bad.append(f"witness {v.name}: {e}")
                    continue
                if timestamp is not None and v.name not in found:
                    found[v.name] = Cosignature(v.name, sig.key_id, timestamp, sig.line)
        return Cosigned(
            cosignatures=tuple(found.values()),
            bad=tuple(bad),
            quorum=self.quorum,
            witnesses=len(self.verifiers),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessingConfig:
    """The ``[vault]`` table's witnesses (``[[vault.witnesses]]``: url, vkey), the quorum
    (``witness_quorum``), and the client's bounds."""

    witnesses: tuple[Witness, ...] = ()
    quorum: int | None = None  # None: default_quorum(len(witnesses))
    timeout_s: float = DEFAULT_TIMEOUT_S  # one add-checkpoint exchange, connecting included
    retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S  # a witness behind is tried again
    policy: Policy = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= 300 or not 0 < self.retry_interval_s <= 3600:
            raise WitnessingError("witness timeout_s is from 0 to 300 s, retry from 0 to 3600 s")
        policy = Policy.checked(tuple(w.verifier for w in self.witnesses), self.quorum)
        object.__setattr__(self, "policy", policy)


def from_table(conf: Mapping[str, Any]) -> WitnessingConfig:
    """The witnessing configuration of a ``[vault]`` TOML table::

    witness_quorum = 1          # optional: half the witnesses, rounded up
    witness_timeout_s = 5       # optional
    [[vault.witnesses]]
    url = "http://10.0.0.5:3191"
    vkey = "witness.site-a.example.org/horodate+1a2b3c4d+BHve…"
    """
    raw = conf.get("witnesses", [])
    if not isinstance(raw, list) or not all(isinstance(w, dict) for w in raw):
        raise WitnessingError("[[vault.witnesses]] is a list of tables with url and vkey")
    witnesses = []
    for n, w in enumerate(raw):
        unknown = set(w) - _WITNESS_KEYS
        if unknown or not all(isinstance(w.get(k), str) for k in _WITNESS_KEYS):
            raise WitnessingError(
                f"witness {n + 1}: give url and vkey (strings), nothing else"
                + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else "")
            )
        witnesses.append(Witness.parse(w["url"], w["vkey"]))
    quorum = conf.get("witness_quorum")
    if quorum is not None and (not isinstance(quorum, int) or isinstance(quorum, bool)):
        raise WitnessingError("witness_quorum is an integer")
    kwargs: dict[str, Any] = {"witnesses": tuple(witnesses), "quorum": quorum}
    for key, name in (("witness_timeout_s", "timeout_s"), ("witness_retry_s", "retry_interval_s")):
        if key in conf:
            kwargs[name] = float(conf[key])
    return WitnessingConfig(**kwargs)


def _signatures(checkpoint_text: str, lines: Sequence[str]) -> list[NoteSignature]:
    if not lines:
        return []
    try:
        _, signatures = parse_note(checkpoint_text + "\n" + "".join(f"{x}\n" for x in lines))
    except NoteError as e:
        raise WitnessingError(f"a cosignature line is malformed: {e}") from None
    return signatures


def cosigned_note(note: str, lines: Iterable[str]) -> str:
    """The vault's signed ``note`` with the cosignature ``lines`` appended (each once)."""
    present = set(note.split("\n"))
    added = [line for line in dict.fromkeys(lines) if line not in present]
    return note + "".join(f"{line}\n" for line in added)


def split_cosigned(note: str, vault: Verifier) -> tuple[str, str, list[str]]:
    """``(text, vault_note, other_lines)`` of a cosigned checkpoint: its text, the note as
    the vault signed it (its text and the vault's own signature lines: the bytes its token
    is over) and the other signature lines (the cosignatures). Checks the form only."""
    try:
        text, signatures = parse_note(note)
    except NoteError as e:
        raise WitnessingError(f"the checkpoint: {e}") from None
    mine = [s.line for s in signatures if (s.name, s.key_id) == (vault.name, vault.key_id)]
    others = [s.line for s in signatures if (s.name, s.key_id) != (vault.name, vault.key_id)]
    return text, text + "\n" + "".join(f"{line}\n" for line in mine), others
