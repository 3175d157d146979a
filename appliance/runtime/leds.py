"""The status LEDs, driven from the clock ensemble's state by a thread of their own.

Green: issuing, a quorum of sources agrees (synchronised). Amber: issuing in holdover
(no quorum; the bound grows until it passes ``max_error_s``). Red: refusing — starting,
unsynchronised, alarm, a leap-second window. All dark: the appliance is not running.

The thread asks the ensemble every ``LED_CHECK_S`` (as ``/health`` does, without moving
it) and writes the pins only when the colour changes. It takes nothing from the event
loop and holds the ensemble's lock only for the assessment, so a slow or failing GPIO
never delays a token; :class:`drivers.leds.StatusLeds` logs a failing pin once and goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from appliance.clock import ClockState, Ensemble
from appliance.config import LedsSection
from drivers.leds import LedColour, PinFactory, StatusLeds, blinka_pin
from drivers.monotonic import mono_ns

log = logging.getLogger(__name__)

# A quarter of a second from a transition to the LED: quicker than a person turns to look,
# and an assessment at 4 Hz costs the ensemble nothing.
LED_CHECK_S = 0.25

STOP_TIMEOUT_S = 2.0


def colour_for(state: ClockState, issuing: bool) -> LedColour:
    """The one LED for this state of the clock."""
    if not issuing:
        return LedColour.RED
    return LedColour.GREEN if state is ClockState.SYNCHRONISED else LedColour.AMBER


def led_pins(section: LedsSection) -> dict[LedColour, str]:
    """The configured LEDs; empty: none (no ``[leds]`` section)."""
    pins = {c: getattr(section, c.value) for c in LedColour}
    return {c: name for c, name in pins.items() if name is not None}


class StatusLights:
    """Shows the ensemble's state on the LEDs, from :meth:`start` to :meth:`stop`."""

    def __init__(
        self,
        ensemble: Ensemble,
        leds: StatusLeds,
        *,
        clock: Callable[[], int] = mono_ns,
        interval_s: float = LED_CHECK_S,
    ) -> None:
        self.ensemble = ensemble
        self.leds = leds
        self._clock = clock
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.colour: LedColour | None = None

    @classmethod
    def for_config(
        cls,
        section: LedsSection,
        ensemble: Ensemble,
        *,
        clock: Callable[[], int] = mono_ns,
        open_pin: PinFactory = blinka_pin,
    ) -> StatusLights | None:
        """None when no LED is configured."""
        pins = led_pins(section)
        if not pins:
            return None
        return cls(ensemble, StatusLeds(pins, open_pin=open_pin), clock=clock)

    def update(self) -> LedColour:
        """Assess the clock now; on a change of colour, light the LED of the new one."""
        assessment = self.ensemble.assess(self._clock())
        colour = colour_for(assessment.state, assessment.issuing)
        if colour is not self.colour:
            self.leds.show(colour)
            log.debug("leds: %s (clock %s)", colour.value, assessment.state.value)
            self.colour = colour
        return colour

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="horodate-leds", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        self.leds.close()
        self.colour = None

    def _run(self) -> None:
        while True:
            try:
                self.update()
            except Exception:  # a bug: the LEDs must not take the appliance down with them
                log.exception("leds: updating failed")
            if self._stop.wait(self._interval_s):
                return
