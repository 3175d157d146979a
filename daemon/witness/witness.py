"""The witness: its key, its state, and add-checkpoint from end to end.

``DATA_DIR`` holds ``witness.key`` (mode 0600: the cosigning key, made once by
:func:`init`, kept for life — the logs' clients are configured with its public half),
``witness.vkey`` (that public half, the vkey to hand out) and ``witness.db``
(:mod:`daemon.witness.state`).

One request goes: its form and the log's signature (:mod:`daemon.witness.protocol`, on
the event loop), then, holding the origin's lock, the checks against the stored state,
the cosignature, and the compare-and-swap that makes the new state durable — only then is
the cosignature returned. The lock serialises the requests of one origin in this process;
the database's write lock and its compare-and-swap hold even across processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from daemon.note import NoteError, NoteSignature
from daemon.witness import protocol
from daemon.witness.cosignature import Cosigner
from daemon.witness.protocol import AddCheckpoint, Inconsistent, UnknownLog, WitnessError
from daemon.witness.state import WitnessState

log = logging.getLogger("horodate.witness")

KEY_FILE: Final = "witness.key"
VKEY_FILE: Final = "witness.vkey"
STATE_FILE: Final = "witness.db"


class KeyFileError(WitnessError):
    """The witness's key is missing, unreadable or malformed."""


@dataclass(frozen=True, slots=True)
class WitnessConfig:
    data_dir: Path
    body_max_bytes: int = 64 * 1024  # 63 proof lines and a checkpoint with 100 signatures fit


def posix_now() -> int:
    return int(time.time())


def _write_new(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def init(data_dir: Path, name: str) -> Cosigner:
    """Make the witness's key (once: an existing key is never replaced) and its state."""
    key_file = data_dir / KEY_FILE
    if key_file.exists():
        raise KeyFileError(
            f"{key_file} exists: a witness keeps its key for life (its logs' clients trust "
            "it); use another --data-dir for another witness"
        )
    try:
        cosigner = Cosigner.generate(name)
    except NoteError as e:
        raise KeyFileError(f"witness name {name!r}: {e}") from e
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(key_file, cosigner.key_string() + "\n", 0o600)
        (data_dir / VKEY_FILE).write_text(cosigner.verifier().key_string() + "\n")
        fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise KeyFileError(f"cannot write the witness's key in {data_dir}: {e}") from e
    WitnessState.open(data_dir / STATE_FILE).close()
    return cosigner


def load_key(data_dir: Path) -> Cosigner:
    key_file = data_dir / KEY_FILE
    try:
        return Cosigner.from_key_string(key_file.read_text())
    except FileNotFoundError:
        raise KeyFileError(
            f"no {key_file}: run `horodate witness init --name NAME --data-dir {data_dir}`"
        ) from None
    except (OSError, NoteError) as e:
        raise KeyFileError(f"cannot use {key_file}: {e}") from e


class Witness:
    def __init__(self, config: WitnessConfig, *, now: Callable[[], int] = posix_now) -> None:
        self.config = config
        self.cosigner = load_key(config.data_dir)
        self.state = WitnessState.open(config.data_dir / STATE_FILE)
        self._now = now
        self._locks: dict[str, asyncio.Lock] = {}  # per known origin: bounded by the config

    @property
    def name(self) -> str:
        return self.cosigner.name

    @property
    def verifier_key(self) -> str:
        return self.cosigner.verifier().key_string()

    def close(self) -> None:
        self.state.close()

    async def add_checkpoint(self, body: bytes) -> str:
        """The cosignature line(s) for the checkpoint in ``body``, once the new state is
        durable; or one of :mod:`daemon.witness.protocol`'s refusals."""
        request = protocol.parse(body)
        origin = request.checkpoint.origin
        trusted = await asyncio.to_thread(self.state.verifiers, origin)
        if not trusted:
            raise UnknownLog(f"this witness does not witness {origin[:200]!r}")
        signed_by = protocol.check_signatures(request, trusted)
        try:
            protocol.check_request(request)
        except Inconsistent as e:
            await asyncio.to_thread(self._keep_evidence, origin, e, body)
            raise
        lock = self._locks.setdefault(origin, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self._advance, request, signed_by, body)

    def _advance(
        self, request: AddCheckpoint, signed_by: tuple[NoteSignature, ...], body: bytes
    ) -> str:
        origin = request.checkpoint.origin
        known = self.state.head(origin)
        try:
            protocol.check_against(request, known)
        except Inconsistent as e:
            self._keep_evidence(origin, e, body)
            raise
        timestamp = self._now()
        # Cosign the text the log signed (parse() checked it is the canonical form of what
        # it parsed), with only the log's signatures that verified beside it.
        line = self.cosigner.cosign(request.text, timestamp)
        note = request.text + "\n" + "".join(s.line + "\n" for s in signed_by) + line
        self.state.advance(origin, expected=known, new=request.head, note=note, at=timestamp)
        log.info("witness: cosigned %s at size %d (from %d)", origin, request.head.size, known.size)
        return line

    def _keep_evidence(self, origin: str, refusal: Inconsistent, body: bytes) -> None:
        try:
            kept = self.state.keep_evidence(origin, str(refusal), body, at=self._now())
        except WitnessError as e:  # the refusal stands even if the evidence cannot be kept
            log.error("witness: cannot keep the evidence of %s: %s", origin, e)
            return
        log.warning(
            "witness: %s signed a checkpoint inconsistent with what this witness cosigned (%s); %s",
            origin,
            refusal,
            "kept as evidence" if kept else "not kept: this log's evidence quota is full",
        )
