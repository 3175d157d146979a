"""How the daemons' log lines read: one event a line, its level and its source (the logger's
name), on stderr.

Under systemd, stderr is a stream to journald (``$JOURNAL_STREAM`` names it: "device:inode"
of that stream, systemd.exec(5)). Then each line starts with its syslog priority, ``<3>``
for an error (sd-daemon(3)'s prefixes, which journald turns into the entry's PRIORITY=),
and carries no timestamp, since journald stamps every entry itself. A line that goes on
(a traceback, for an unexpected fault only) keeps the prefix on each of its lines, so that
journald files the whole of it at its priority. Elsewhere the format stays as it was:
timestamp, level, logger, message.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Final, TextIO

PLAIN_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
JOURNAL_FORMAT: Final = "%(levelname)s %(name)s: %(message)s"

# sd-daemon(3): SD_ERR "<3>", SD_WARNING "<4>", SD_INFO "<6>", SD_DEBUG "<7>" …
_PRIORITY: Final = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (a level between two: the more severe)."""
    return next((p for level, p in sorted(_PRIORITY.items()) if levelno <= level), 2)


class JournalFormatter(logging.Formatter):
    """``<N>LEVEL logger: message`` on every line of the record."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return prefix + super().format(record).replace("\n", "\n" + prefix + "  ")


def writes_to_journal(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal stream systemd handed us (not merely a process
    started under systemd whose stderr was sent elsewhere since)."""
    env = os.environ if env is None else env
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def formatter_for(stream: TextIO) -> logging.Formatter:
    return JournalFormatter() if writes_to_journal(stream) else logging.Formatter(PLAIN_FORMAT)


def configure(level: int, stream: TextIO | None = None) -> None:
    """The root logger's one handler, on ``stream`` (stderr), at ``level``."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.set_name("horodate")  # the appliance's worker processes take its formatter
    handler.setFormatter(formatter_for(stream))
    logging.basicConfig(level=level, handlers=[handler])
