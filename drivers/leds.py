"""Status LEDs on GPIO pins, through adafruit-blinka's ``digitalio``.

Three LEDs, each on its own pin named as Blinka's ``board`` names them (``"D17"`` is
GPIO 17, header pin 11), each lit by driving its pin high (the LED and its resistor go
from the pin to ground: docs/leds.md). :class:`StatusLeds` lights one and darkens the
others; which one is the appliance's business (appliance/runtime/leds.py), not the
driver's.

A LED is a convenience, never a reason to stop the time: a pin that cannot be opened or
written is logged once, without a traceback (a pin already taken, a board Blinka does not
know, a missing ``/dev/gpiomem`` permission are expected faults), and left dark from then
on; the other LEDs go on. Nothing here raises.

The pins are made by an injected ``open_pin(name)``: by default :func:`blinka_pin`, a
``digitalio.DigitalInOut`` switched to output; in tests and with ``--simulate``,
``drivers.sim.gpio.SimGpio.open``, as the DS3231 driver is handed a simulated ``busio.I2C``.
"""

from __future__ import annotations

import enum
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from drivers.errors import DriverError

log = logging.getLogger(__name__)


class LedColour(enum.Enum):
    GREEN = "green"
    AMBER = "amber"
    RED = "red"


class OutputPin(Protocol):
    """The part of ``digitalio.DigitalInOut`` (as an output) the LEDs use."""

    value: bool

    def deinit(self) -> None: ...


PinFactory = Callable[[str], OutputPin]


class LedError(DriverError):
    """A LED's pin cannot be opened."""


def blinka_pin(name: str) -> OutputPin:
    """``board.<name>`` as a ``digitalio`` output, off."""
    try:
        import board
        import digitalio

        pin = getattr(board, name)
    except AttributeError as e:
        where = getattr(sys.modules.get("board"), "board_id", None) or "this board"
        raise LedError(f"no pin {name} on {where} (a Pi's are D0 to D27)") from e
    except (ImportError, NotImplementedError, RuntimeError, OSError) as e:
        raise LedError(f"GPIO not available through Blinka: {e}") from e
    io = digitalio.DigitalInOut(pin)
    io.switch_to_output(value=False)
    out: OutputPin = io
    return out


class StatusLeds:
    """The LEDs, at most one lit. Thread-safe; :meth:`show` never raises."""

    def __init__(self, pins: Mapping[LedColour, str], *, open_pin: PinFactory = blinka_pin) -> None:
        self.pins = dict(pins)
        self._open_pin = open_pin
        self._open: dict[LedColour, OutputPin] = {}
        self._failed: dict[LedColour, str] = {}  # dark for good, and why (logged once)
        self._lock = threading.Lock()
        self.lit: LedColour | None = None

    @property
    def failed(self) -> Mapping[LedColour, str]:
        return dict(self._failed)

    def show(self, lit: LedColour | None) -> None:
        """Light ``lit`` (None: none) and darken the others."""
        with self._lock:
            # the others off first: two LEDs are never lit at once, even for an instant
            for colour in sorted(self.pins, key=lambda c: c is lit):
                self._write(colour, colour is lit)
            self.lit = lit

    def close(self) -> None:
        """All dark, pins released (a dark panel: the appliance is not running)."""
        self.show(None)
        with self._lock:
            for colour, pin in self._open.items():
                try:
                    pin.deinit()
                except Exception as e:  # GPIO failures are never fatal (module docstring)
                    log.debug("led %s: deinit failed: %s", colour.value, e)
            self._open.clear()

    def _write(self, colour: LedColour, on: bool) -> None:
        if colour in self._failed:
            return
        name = self.pins[colour]
        try:
            pin = self._open.get(colour)
            if pin is None:
                pin = self._open[colour] = self._open_pin(name)
            pin.value = on
        except Exception as e:  # any GPIO failure: logged once, the LED left dark
            self._failed[colour] = f"{type(e).__name__}: {e}"
            self._open.pop(colour, None)
            log.error(
                "led %s (%s): %s; this LED stays dark until the appliance restarts",
                colour.value,
                name,
                e,
            )
