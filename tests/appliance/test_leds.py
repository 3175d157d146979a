"""The status LEDs: each state of the clock lights exactly its LED, a transition switches,
and a GPIO pin that raises is logged once while tokens go on being issued.

The pins are :class:`drivers.sim.gpio.SimGpio`'s, handed to the LED driver in place of
``digitalio.DigitalInOut`` (that module's docstring says why not Blinka's simulated board).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.clock import ClockState, Policy
from appliance.clock.timekeeper import Timekeeper
from appliance.config import ApplianceConfig, ConfigError, LedsSection, TsaSection, load_config
from appliance.runtime.assembly import build_app
from appliance.runtime.driver_threads import Appliance, Sources
from appliance.runtime.leds import StatusLights, colour_for, led_pins
from drivers.leds import LedColour, StatusLeds
from drivers.sim.gpio import SimGpio
from timestamping import Digest, build_request, parse_reply

from .conftest import VirtualClock, feed_agreeing_sources

PINS = {LedColour.GREEN: "D17", LedColour.AMBER: "D27", LedColour.RED: "D22"}


@dataclass
class Seen:
    state: ClockState
    issuing: bool


class ScriptedEnsemble:
    """Answers ``assess`` with the state a test sets (every state, alarm included)."""

    def __init__(self, state: ClockState, issuing: bool) -> None:
        self.seen = Seen(state, issuing)

    def assess(self, mono_ns: int) -> Seen:
        return self.seen


def lights_on(ensemble: Any, gpio: SimGpio, clock: VirtualClock | None = None) -> StatusLights:
    return StatusLights(
        ensemble, StatusLeds(PINS, open_pin=gpio.open), clock=clock or VirtualClock()
    )


@pytest.mark.parametrize(
    ("state", "issuing", "pin"),
    [
        (ClockState.SYNCHRONISED, True, "D17"),
        (ClockState.HOLDOVER, True, "D27"),
        (ClockState.HOLDOVER, False, "D22"),  # holdover whose bound passed max_error_s
        (ClockState.STARTING, False, "D22"),
        (ClockState.UNSYNCHRONISED, False, "D22"),
        (ClockState.ALARM, False, "D22"),
        (ClockState.LEAP_WINDOW, False, "D22"),
    ],
)
def test_each_state_lights_exactly_its_led(state: ClockState, issuing: bool, pin: str) -> None:
    gpio = SimGpio()
    lights_on(ScriptedEnsemble(state, issuing), gpio).update()
    assert gpio.lit() == {pin}
    assert set(gpio.pins) == set(PINS.values())  # the others were driven low, not left


def test_the_leds_follow_the_real_ensemble_through_its_transitions() -> None:
    clock = VirtualClock()
    timekeeper = Timekeeper(Policy(), clock=clock)
    gpio = SimGpio()
    lights = lights_on(timekeeper.ensemble, gpio, clock)
    seen = [lights.update()]  # starting
    feed_agreeing_sources(timekeeper, clock)
    seen.append(lights.update())  # synchronised
    clock.advance(60)  # the sources go stale: holdover, still issuing
    seen.append(lights.update())
    clock.advance(20_000)  # the holdover bound passes 1 s: refusing
    seen.append(lights.update())
    assert seen == [LedColour.RED, LedColour.GREEN, LedColour.AMBER, LedColour.RED]
    assert gpio.lit() == {"D22"}


def test_a_transition_switches_and_never_lights_two_at_once() -> None:
    ensemble = ScriptedEnsemble(ClockState.SYNCHRONISED, True)
    gpio = SimGpio()
    lights = lights_on(ensemble, gpio)
    lights.update()
    ensemble.seen = Seen(ClockState.HOLDOVER, True)
    lights.update()
    assert gpio.lit() == {"D27"}
    # green went low before amber went high (writes in order, one pin at a time)
    green, amber = gpio.pins["D17"].history, gpio.pins["D27"].history
    assert green == [True, False] and amber == [False, True]
    writes = len(green) + len(amber) + len(gpio.pins["D22"].history)
    lights.update()  # no transition: no write
    assert len(green) + len(amber) + len(gpio.pins["D22"].history) == writes


def test_a_failing_pin_is_logged_once_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ensemble = ScriptedEnsemble(ClockState.STARTING, False)
    gpio = SimGpio(failing=frozenset({"D22"}), broken=frozenset({"D27"}))
    lights = lights_on(ensemble, gpio)
    with caplog.at_level(logging.ERROR, logger="drivers.leds"):
        for state, issuing in [
            (ClockState.STARTING, False),
            (ClockState.SYNCHRONISED, True),
            (ClockState.HOLDOVER, True),
            (ClockState.ALARM, False),
            (ClockState.SYNCHRONISED, True),
        ]:
            ensemble.seen = Seen(state, issuing)
            lights.update()  # never raises
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sorted(r.getMessage().split(" ")[1] for r in errors) == ["amber", "red"]
    assert all(r.exc_info is None for r in errors)  # an expected fault: no traceback
    assert gpio.lit() == {"D17"}
    assert set(lights.leds.failed) == {LedColour.AMBER, LedColour.RED}


def test_stop_darkens_every_led_and_releases_the_pins() -> None:
    gpio = SimGpio()
    lights = lights_on(ScriptedEnsemble(ClockState.SYNCHRONISED, True), gpio)
    lights.start()
    lights.stop()
    assert gpio.lit() == set()
    assert all(pin.released for pin in gpio.pins.values())


def test_leds_come_from_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "appliance.toml"
    path.write_text('[leds]\ngreen = "D17"\nred = "D22"\n')
    config = load_config(path)
    assert led_pins(config.leds) == {LedColour.GREEN: "D17", LedColour.RED: "D22"}
    assert led_pins(ApplianceConfig().leds) == {}  # no [leds]: no LEDs
    assert StatusLights.for_config(ApplianceConfig().leds, Timekeeper(Policy()).ensemble) is None
    for bad in ("green = 17\n", 'green = "D17"\nred = "D17"\n', 'blue = "D5"\n'):
        path.write_text("[leds]\n" + bad)
        with pytest.raises(ConfigError):
            load_config(path)


def test_colour_for_every_clock_state() -> None:
    for state in ClockState:
        assert colour_for(state, False) is LedColour.RED
    assert colour_for(ClockState.SYNCHRONISED, True) is LedColour.GREEN
    assert colour_for(ClockState.HOLDOVER, True) is LedColour.AMBER


async def test_tokens_are_issued_while_every_led_pin_raises(
    pki: Any,
    timekeeper: Timekeeper,
    clock: VirtualClock,
    tmp_path: Path,
    serve: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ApplianceConfig(
        data_dir=tmp_path / "appliance",
        tsa=TsaSection(
            key_file=str(pki.tsa_key), cert_file=str(pki.tsa_cert), chain_file=str(pki.chain)
        ),
        leds=LedsSection(green="D17", amber="D27", red="D22"),
    )
    feed_agreeing_sources(timekeeper, clock)
    appliance = Appliance(config, Sources(), timekeeper)
    gpio = SimGpio(failing=frozenset(PINS.values()))
    appliance.lights = StatusLights(
        timekeeper.ensemble, StatusLeds(PINS, open_pin=gpio.open), clock=clock, interval_s=0.01
    )
    with caplog.at_level(logging.ERROR, logger="drivers.leds"):
        served = await serve(build_app(config, appliance=appliance))
        for i in range(3):
            query = build_request(
                hashlib.sha256(b"%d" % i).digest(), digest=Digest.SHA256, nonce=i + 1
            )
            async with served.post(
                "/tsa", data=query.der, headers={"Content-Type": "application/timestamp-query"}
            ) as response:
                assert parse_reply(await response.read()).granted
    assert any(t.name == "horodate-leds" for t in threading.enumerate())
    assert appliance.lights.colour is LedColour.GREEN  # shown, on pins that all fail
    errors = [r.getMessage().split(" (")[0] for r in caplog.records if r.name == "drivers.leds"]
    assert sorted(errors) == ["led amber", "led green", "led red"]  # once each
