"""The devices the drivers open: the GPS's serial port, the I2C bus and the DS3231 on it,
the PPS device — each present, free, and open to the appliance's user.

The appliance runs as ``horodate-tsa`` with the groups of its unit
(``SupplementaryGroups=dialout i2c``, systemd/horodate-appliance.service); access is
judged for that account from each node's owner, group and mode, not for whoever runs the
doctor.
"""

from __future__ import annotations

import os

from .boot import BootConfig
from .findings import Account, Finding, Host, Verdict, describe, may_open

# The kernel's driver for the DS1307 family, DS3231 included (drivers/rtc/rtc-ds1307.c):
# bound to the chip, it answers EBUSY to user space.
KERNEL_RTC_DRIVERS = frozenset({"rtc-ds1307", "rtc-ds3232"})


def _access(host: Host, path: str, account: Account, *, write: bool) -> tuple[str, str | None]:
    """(``ls -l`` of the node, a fix when ``account`` may not open it)."""
    st = host.stat(path)
    assert st is not None
    seen = describe(host, st)
    if may_open(host, st, account, write=write):
        return seen, None
    group = host.group_name(st.st_gid)
    return seen, (
        f"sudo usermod -aG {group} {account.name}   # then `sudo systemctl restart "
        "horodate-appliance`"
        if group != "root"
        else f"sudo chgrp dialout {path} && sudo chmod g+rw {path}   # and a udev rule to keep it"
    )


def _txt(config: BootConfig | None) -> str:
    return "config.txt" if config is None else config.path


def check_serial(host: Host, device: str | None, account: Account) -> Finding:
    if not device:
        return Finding("gps-serial", Verdict.SKIP, "no GPS configured ([gps] device)")
    resolved = host.resolve(device)
    if resolved is None:
        on_uart = any(name in device for name in ("serial0", "ttyAMA", "ttyS"))
        missing = (
            "the UART is off: see the `uart` check (enable_uart=1), then `sudo reboot`"
            if on_uart
            else "is the receiver plugged in? `ls -l /dev/serial/by-id/` lists what is there"
        )
        return Finding("gps-serial", Verdict.FAIL, f"{device} does not exist", (missing,))
    seen, denied = _access(host, resolved, account, write=True)
    via = f" → {resolved}" if resolved != device else ""
    if denied:
        return Finding(
            "gps-serial",
            Verdict.FAIL,
            f"{device}{via} ({seen}): {account.name} may not open it",
            (denied,),
        )
    if resolved.endswith("/ttyAMA10"):
        # Raspberry Pi 5: serial0 is the debug UART (the 3-pin connector), not GPIO 14/15
        return Finding(
            "gps-serial",
            Verdict.FAIL,
            f"{device}{via}: the Pi 5's debug UART, not GPIO 14/15",
            ('set `device = "/dev/ttyAMA0"` under [gps] in /etc/horodate/appliance.toml',),
        )
    return Finding("gps-serial", Verdict.OK, f"{device}{via} ({seen})")


def check_i2c(host: Host, bus: int | None, account: Account, config: BootConfig | None) -> Finding:
    if bus is None:
        return Finding("i2c", Verdict.SKIP, "no RTC configured ([rtc] i2c_bus)")
    device = f"/dev/i2c-{bus}"
    if not host.exists(device):
        missing = (
            f"add the line `dtparam=i2c_arm=on` under [all] in {_txt(config)}, then "
            "`sudo reboot` (or `sudo raspi-config nonint do_i2c 0`)"
            if bus == 1
            else f"is I2C bus {bus} enabled? `ls /dev/i2c-*`; check [rtc] i2c_bus"
        )
        return Finding("i2c", Verdict.FAIL, f"{device} does not exist: I2C is off", (missing,))
    seen, denied = _access(host, device, account, write=True)
    if denied:
        return Finding(
            "i2c", Verdict.FAIL, f"{device} ({seen}): {account.name} may not open it", (denied,)
        )
    return Finding("i2c", Verdict.OK, f"{device} ({seen})")


def check_rtc_free(host: Host, bus: int | None, address: int, config: BootConfig | None) -> Finding:
    """The DS3231 not bound to the kernel's RTC driver (docs/rtc.md: no
    ``dtoverlay=i2c-rtc,ds3231``)."""
    if bus is None:
        return Finding("ds3231", Verdict.SKIP, "no RTC configured ([rtc] i2c_bus)")
    node = f"/sys/bus/i2c/devices/{bus}-{address:04x}"
    driver_link = host.path(f"{node}/driver")
    line = None if config is None else config.overlay_line("i2c-rtc")
    fixes: list[str] = []
    problems: list[str] = []
    if config is not None and line is not None:
        problems.append(f"`{line}` in {config.path}")
        fixes.append(f"remove the line `{line}` from {config.path}, then `sudo reboot`")
    if os.path.islink(driver_link):
        driver = os.path.basename(os.readlink(driver_link))
        problems.append(f"0x{address:02x} is bound to the kernel's {driver} driver ({node})")
        fixes.append(
            f"until the reboot: `echo 0x{address:02x} | sudo tee "
            f"/sys/bus/i2c/devices/i2c-{bus}/delete_device`"
        )
    if problems:
        return Finding(
            "ds3231",
            Verdict.FAIL,
            "the kernel owns the RTC (i2cdetect shows UU; the appliance gets EBUSY): "
            + "; ".join(problems),
            tuple(fixes),
        )
    return Finding(
        "ds3231",
        Verdict.OK,
        f"0x{address:02x} on bus {bus} not claimed by a kernel driver "
        f"(`sudo i2cdetect -y {bus}` should show {address:02x})",
    )


def check_pps(
    host: Host, device: str | None, account: Account, config: BootConfig | None
) -> Finding:
    if not device:
        return Finding("pps", Verdict.SKIP, "no PPS configured ([gps] pps_device)")
    name = device.rsplit("/", 1)[-1]
    overlay = config is not None and config.has_overlay("pps-gpio")
    resolved = host.resolve(device)
    if resolved is None:
        missing = (
            "the overlay is there but no device: `sudo modprobe pps-gpio`; `dmesg | grep pps`"
            if overlay
            else "add the line `dtoverlay=pps-gpio,gpiopin=18` under [all] in "
            f"{_txt(config)}, then `sudo reboot`"
        )
        return Finding("pps", Verdict.FAIL, f"{device} does not exist", (missing,))
    source = (host.read_text(f"/sys/class/pps/{name}/name") or "").strip()
    seen, denied = _access(host, resolved, account, write=False)
    what = f"{device} ({seen}" + (f", {source}" if source else "") + ")"
    if denied:
        return Finding(
            "pps",
            Verdict.FAIL,
            f"{what}: {account.name} may not open it",
            (
                "sudo install -m 644 systemd/99-horodate-pps.rules /etc/udev/rules.d/ && "
                "sudo udevadm trigger",
                denied,
            ),
        )
    if not source:
        return Finding(
            "pps",
            Verdict.WARN,
            f"{what}: /sys/class/pps/{name}/name unreadable, is it a PPS device?",
            ("`cat /sys/class/pps/*/name`; set [gps] pps_device to the pps-gpio one",),
        )
    return Finding("pps", Verdict.OK, what)


# What Blinka drives GPIO through: /dev/gpiomem (RPi.GPIO, Pi 4 and before), a
# /dev/gpiochipN (libgpiod/lgpio, Pi 5). Raspberry Pi OS gives both to the group gpio.
GPIO_MEMORY = "/dev/gpiomem"


def check_leds(host: Host, pins: dict[str, str], account: Account) -> Finding:
    if not pins:
        return Finding("leds", Verdict.SKIP, "no status LEDs configured ([leds])")
    wired = ", ".join(f"{colour} {pin}" for colour, pin in pins.items())
    chips = sorted(p.name for p in host.path("/dev").glob("gpiochip*"))
    nodes = ([GPIO_MEMORY] if host.exists(GPIO_MEMORY) else []) + [f"/dev/{c}" for c in chips]
    if not nodes:
        return Finding(
            "leds",
            Verdict.FAIL,
            f"{wired}: no {GPIO_MEMORY} nor /dev/gpiochip*: no GPIO for the LEDs",
            ("`ls -l /dev/gpio*`; a Raspberry Pi OS kernel provides them",),
        )
    refused = []
    for node in nodes:
        seen, denied = _access(host, node, account, write=True)
        if denied is None:
            return Finding("leds", Verdict.OK, f"{wired} through {node} ({seen})")
        refused.append((node, seen, denied))
    node, seen, denied = refused[0]
    return Finding(
        "leds",
        Verdict.WARN,  # the LEDs stay dark; the time is not at stake
        f"{wired}: {account.name} may not open {node} ({seen}); the LEDs stay dark",
        (denied,),
    )
