"""Simulated hardware: one world whose truth is the host's real clock.

A GPS that writes NMEA to a pseudo-terminal, an NTP server on a loopback UDP port and a
register-level DS3231 behind the ``busio.I2C`` interface. The real drivers read them through
their production paths (pty bytes, UDP packets, I2C register reads). Faults are injected and
cleared at run time through :class:`drivers.sim.faults.Faults`.
"""
