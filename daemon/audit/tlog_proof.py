"""C2SP tlog-proof (``c2sp.org/tlog-proof@v1``): an entry's index, its inclusion proof and
the checkpoint it is proven against, in one text file an auditor can read and check.

    c2sp.org/tlog-proof@v1
    index 42
    <base64 hash>            (the inclusion proof, leaf to root, one hash a line)
    ...
    <blank line>
    <the signed checkpoint note>

No maintained Python library writes or reads this format (it is a few lines of text).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

from daemon.errors import VaultError

HEADER: Final = "c2sp.org/tlog-proof@v1"
_INDEX = re.compile(r"index (0|[1-9][0-9]{0,18})")


class ProofFormatError(VaultError):
    """A tlog-proof file that is not one."""


@dataclass(frozen=True, slots=True)
class TlogProof:
    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str  # the signed note, as served
    extra: bytes | None = None

    def text(self) -> str:
        lines = [HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines += [base64.b64encode(h).decode() for h in self.hashes]
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def parse(cls, text: str) -> TlogProof:
        head, sep, checkpoint = text.partition("\n\n")
        lines = head.split("\n")
        if not sep or lines[0] != HEADER:
            raise ProofFormatError(f"not a {HEADER} file")
        extra = None
        rest = lines[1:]
        try:
            if rest and rest[0].startswith("extra "):
                extra = base64.b64decode(rest.pop(0)[6:], validate=True)
            m = _INDEX.fullmatch(rest.pop(0)) if rest else None
            if m is None:
                raise ProofFormatError("the proof has no 'index N' line")
            hashes = tuple(base64.b64decode(h, validate=True) for h in rest)
        except binascii.Error as e:
            raise ProofFormatError(f"a proof line is not base64: {e}") from e
        if any(len(h) != 32 for h in hashes):
            raise ProofFormatError("an inclusion hash is not 32 bytes")
        return cls(index=int(m.group(1)), hashes=hashes, checkpoint=checkpoint, extra=extra)
