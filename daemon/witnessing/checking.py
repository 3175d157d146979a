"""``vault verify``'s witness step: every stored cosignature against the witness keys given.

Trusting nothing stored: each line of a witness of the policy must verify over the text of
the checkpoint of its size (as the ``checkpoints`` table holds it — a checkpoint rewritten
with the vault's key no longer matches its witnesses' lines), and the row's columns must
say what the line says. Then each checkpoint counts or not under the policy.

Lines of witnesses the policy does not name are not checked (a witness since removed from
the configuration): they are counted and reported.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from daemon.note import NoteError, parse_note
from daemon.store import Reader
from daemon.witnessing import cosignatures
from daemon.witnessing.cosignatures import CosignatureRow, checkpoint_text
from daemon.witnessing.policy import Policy, WitnessingError


@dataclass
class StoredCosignatures:
    verified: Counter[str] = field(default_factory=Counter)  # witness -> lines verified
    unchecked: int = 0  # lines of witnesses the policy does not name
    witnessed: list[int] = field(default_factory=list)  # sizes that meet the policy

    @property
    def latest_witnessed(self) -> int | None:
        return self.witnessed[-1] if self.witnessed else None


def check_stored(reader: Reader, policy: Policy) -> StoredCosignatures:
    """Every stored cosignature checked; the first that does not hold raises
    :class:`WitnessingError` naming the witness and the checkpoint."""
    out = StoredCosignatures()
    names = {v.name for v in policy.verifiers}
    notes = {cp.size: cp.note for cp in reader.checkpoints()}
    rows = cosignatures.every(reader)
    for size, group in itertools.groupby(rows, key=lambda r: r.size):
        note = notes.get(size)
        if note is None:
            raise WitnessingError(f"a cosignature of checkpoint {size}: no such checkpoint")
        text = checkpoint_text(note)
        good: set[str] = set()
        for row in group:
            _same(text, row)
            if row.witness not in names:
                out.unchecked += 1
                continue
            result = policy.check(text, [row.line])
            if result.bad:
                raise WitnessingError(f"checkpoint {size}: {result.bad[0]}")
            if not result.cosignatures:
                raise WitnessingError(
                    f"checkpoint {size}: the cosignature stored for witness {row.witness} is "
                    "not by its key"
                )
            out.verified[row.witness] += 1
            good.add(row.witness)
        if policy.verifiers and len(good) >= policy.quorum:
            out.witnessed.append(size)
    return out


def _same(text: str, row: CosignatureRow) -> None:
    """The row's columns say what its line says: the witness, the key ID, the time."""
    try:
        _, (sig, *more) = parse_note(text + "\n" + row.line + "\n")
    except (NoteError, ValueError):
        raise WitnessingError(
            f"checkpoint {row.size}: the cosignature stored for witness {row.witness} is not "
            "a signature line"
        ) from None
    timestamp = int.from_bytes(sig.signature[:8], "big") if len(sig.signature) == 72 else None
    if more or (sig.name, sig.key_id, timestamp) != (row.witness, row.key_id, row.cosigned_at):
        raise WitnessingError(
            f"checkpoint {row.size}: the row of witness {row.witness}'s cosignature does not "
            "say what its line says (witness, key ID, time)"
        )
