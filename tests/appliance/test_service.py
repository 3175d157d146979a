"""The production wiring (no --simulate): a configuration naming a serial device, NTP
servers, an I2C bus and a PPS device builds the real drivers, and whatever cannot be set up
is named in /health rather than silently dropped.

The peers are real where they can run here: NMEA bytes come through a pseudo-terminal (the
simulated receiver's), the NTP server answers real UDP packets on loopback. There is no
/dev/i2c-* nor /dev/pps* on this machine: those two are exercised as missing.
"""

from __future__ import annotations

import time
from pathlib import Path

from appliance.clock import ClockState
from appliance.clock.timekeeper import Timekeeper
from appliance.config import ApplianceConfig, GpsSection, NtpSection, RtcSection
from appliance.http.health import health_document
from appliance.runtime.driver_threads import Appliance, build_sources, policy_for
from drivers.monotonic import mono_ns, realtime_ns
from drivers.sim.world import SimWorld


def test_configured_hardware_is_read_and_missing_parts_are_named(tmp_path: Path) -> None:
    with SimWorld() as world:
        host, port = world.ntp_address
        config = ApplianceConfig(
            data_dir=tmp_path,
            gps=GpsSection(device=world.gps_device, pps_device="/nonexistent/pps9"),
            ntp=NtpSection(servers=(f"{host}:{port}",), poll_interval_s=2.0, timeout_s=1.0),
            rtc=RtcSection(i2c_bus=99),
        )
        sources = build_sources(config)
        assert sources.world is None and sources.gps is not None and sources.ntp is not None
        assert sources.rtc is None and "/dev/i2c-99" in sources.unavailable["rtc0"]
        appliance = Appliance(config, sources, Timekeeper(policy_for(config)))
        appliance.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                assessment = appliance.timekeeper.assess()
                if assessment.state is ClockState.SYNCHRONISED:
                    break
                time.sleep(0.2)
            assert assessment.state is ClockState.SYNCHRONISED, assessment.reason
            doc = health_document(
                assessment, mono_ns(), realtime_ns(), appliance.timekeeper.driver_notes()
            )
        finally:
            appliance.stop()
    by_name = {s["name"]: s for s in doc["sources"]}
    assert by_name["gps0"]["status"] == "selected"
    assert by_name[f"ntp:{host}:{port}"]["status"] == "selected"
    assert by_name["rtc0"]["status"] == "waiting"
    assert "not available" in by_name["rtc0"]["driver"]
    assert by_name["pps0"]["kind"] == "pps"
    assert "/nonexistent/pps9" in by_name["pps0"]["driver"]
