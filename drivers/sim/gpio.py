"""Simulated GPIO output pins, in the shape of ``digitalio.DigitalInOut``.

Why a pin object handed to the LED driver (``drivers.leds.StatusLeds(open_pin=…)``) rather
than Blinka's own simulated board (``BLINKA_OS_AGNOSTIC=1``, the "generic agnostic
board"): that board is chosen by an environment variable when ``board`` is first imported,
for the whole process; it names its pins ``Dx_OUTPUT``…, not the Pi's ``D17``; and an
output pin reads back a scripted constant, not what was written, so it cannot tell which
LED is lit. As the DS3231 driver is handed :class:`drivers.sim.ds3231.SimI2CBus` in place
of ``busio.I2C``, the LEDs are handed these in place of ``DigitalInOut``: same attributes,
and every write kept.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class SimGpioError(OSError):
    """What a broken pin raises (a real one: ``OSError``/``RuntimeError`` from the kernel)."""


@dataclass
class SimPin:
    """One output pin: its level, and every level written to it."""

    name: str
    fail_writes: bool = False
    history: list[bool] = field(default_factory=list)
    released: bool = False

    @property
    def value(self) -> bool:
        return self.history[-1] if self.history else False

    @value.setter
    def value(self, on: bool) -> None:
        if self.fail_writes:
            raise SimGpioError(f"{self.name}: write failed (simulated)")
        if self.released:
            raise SimGpioError(f"{self.name}: pin released")
        if on != self.value or not self.history:
            log.debug("gpio %s: %s", self.name, "high" if on else "low")
        self.history.append(bool(on))

    def deinit(self) -> None:
        self.released = True


class SimGpio:
    """A bank of simulated pins, by Blinka board name; ``broken`` ones raise on open,
    ``failing`` ones on every write."""

    def __init__(
        self, *, broken: frozenset[str] = frozenset(), failing: frozenset[str] = frozenset()
    ):
        self.broken = broken
        self.failing = failing
        self.pins: dict[str, SimPin] = {}
        self._lock = threading.Lock()

    def open(self, name: str) -> SimPin:
        with self._lock:
            if name in self.broken:
                raise SimGpioError(f"{name}: pin busy (simulated)")
            pin = SimPin(name, fail_writes=name in self.failing)
            self.pins[name] = pin
            return pin

    def lit(self) -> set[str]:
        """The pins driven high now."""
        with self._lock:
            return {name for name, pin in self.pins.items() if pin.value}
