"""Signals while starting: a SIGHUP (reload the key and certificate) that arrives before the
event loop can handle it is remembered, not the end of the process.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


_RELOAD_ASKED = threading.Event()  # a SIGHUP while the appliance was still starting


def remember_reloads() -> None:
    """From now until the event loop handles it, a SIGHUP (a reload) is remembered
    (:func:`reload_was_asked`) instead of ending the process, its default action. For the
    main process and each TSA worker, at the start of their start-up."""
    signal.signal(signal.SIGHUP, lambda signum, frame: _RELOAD_ASKED.set())


def reload_was_asked() -> bool:
    """Whether a SIGHUP came while starting (once: the request is then forgotten)."""
    asked = _RELOAD_ASKED.is_set()
    _RELOAD_ASKED.clear()
    return asked
