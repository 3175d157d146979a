"""The client side of c2sp.org/tlog-witness: one ``POST <url>/add-checkpoint`` exchange.

The request body is the old size line, the consistency proof lines (base64, one hash a
line), an empty line and the signed checkpoint note, each line ending in ``\\n``. The
answers the vault acts on: 200 with the cosignature line(s); 409 with the size the witness
knows in decimal and a newline (``text/x.tlog.size``). Anything else is a refusal: its
status and the first line of its body are reported, nothing more is read.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

from daemon.witnessing.policy import WitnessingError

SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"  # tlog-witness: the 409's body
MAX_ANSWER_BYTES: Final = 64 * 1024  # a few cosignature lines; a witness sending more is broken
_SIZE: Final = re.compile(r"(0|[1-9][0-9]{0,18})\n")


class Unreachable(WitnessingError):
    """No answer from the witness (refused, reset, timed out, not HTTP)."""


def request_body(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """tlog-witness add-checkpoint: ``old <size>``, the proof lines, an empty line, the
    checkpoint."""
    lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return f"old {old_size}\n{lines}\n{note}".encode()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    text: str  # the body (200: the cosignature lines; else what the witness said)
    known_size: int | None = None  # a 409's: the size of the latest checkpoint it cosigned

    def reason(self) -> str:
        """The answer in one line, for the log and /health."""
        first = self.text.strip().split("\n", 1)[0][:200]
        return f"HTTP {self.status}" + (f": {first}" if first else "")


async def add_checkpoint(
    session: aiohttp.ClientSession, url: str, body: bytes, *, timeout_s: float
) -> Answer:
    """POST ``body`` to ``<url>/add-checkpoint``; the witness's answer, or
    :class:`Unreachable` after ``timeout_s`` at most."""
    try:
        async with session.post(
            f"{url}/add-checkpoint",
            data=body,
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as resp:
            raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise Unreachable(str(e) or type(e).__name__) from e
    if len(raw) > MAX_ANSWER_BYTES:
        return Answer(status=502, text=f"the witness answered over {MAX_ANSWER_BYTES} bytes")
    text = raw.decode("utf-8", errors="replace")
    if status == 409:
        m = _SIZE.fullmatch(text)
        return Answer(status=409, text=text, known_size=None if m is None else int(m.group(1)))
    return Answer(status=status, text=text)
