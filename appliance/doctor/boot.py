"""The Raspberry Pi's firmware settings: which Pi this is, ``config.txt`` and
``cmdline.txt``, and the checks they answer — the UART on GPIO 14/15 and no serial
console on it.

``config.txt`` is read as the firmware reads it (Raspberry Pi documentation, "config.txt",
"Conditional filters"): lines before any section and under ``[all]`` apply; a model
filter (``[pi4]``, ``[pi5]``, ``[cm4]``…) applies when it names this Pi; any other filter
(``[none]``, ``[edid=…]``, ``[gpio4=1]``, ``[tryboot]``) is taken as not applying, so a
setting that only holds under it is reported missing. ``include`` is not followed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .findings import Finding, Host, Verdict, worst

MODEL_FILE = "/proc/device-tree/model"
# Bookworm and later mount the boot partition on /boot/firmware; before, on /boot.
BOOT_DIRS = ("/boot/firmware", "/boot")
# Names the GPS's UART has on a Pi: the alias, the PL011, the mini UART.
UART_NAMES = frozenset({"serial0", "ttyAMA0", "ttyS0"})


# "Raspberry Pi 4 Model B Rev 1.4", "Raspberry Pi Compute Module 4 Rev 1.0",
# "Raspberry Pi Zero 2 W Rev 1.0", "Raspberry Pi 400 Rev 1.0", "Raspberry Pi Model B Rev 2"
_MODEL = re.compile(r"Raspberry Pi (?:(Compute Module) )?(Zero 2|Zero|\d+)?")


@dataclass(frozen=True, slots=True)
class PiModel:
    """The board, from the device tree's ``model`` string."""

    text: str  # "Raspberry Pi 4 Model B Rev 1.4"

    @property
    def filters(self) -> frozenset[str]:
        """The ``config.txt`` model filters that apply to this board."""
        t = self.text
        found = {"all"}
        m = _MODEL.match(t)
        module, name = (m.group(1), m.group(2)) if m else (None, None)
        if name == "Zero 2":
            found.add("pi02")
        elif name == "Zero":
            found |= {"pi0", "pi0w"} if " W" in t else {"pi0"}
        elif name is None:
            found.add("pi1")  # "Raspberry Pi Model B Rev 2"
        else:
            generation = name[0]  # "400" is a 4, "500" a 5
            found.add(f"pi{generation}")
            if module:
                found.add(f"cm{generation}")
            if name in ("400", "500"):
                found.add(f"pi{name}")
            if generation == "3" and "Plus" in t:
                found.add("pi3+")
        return frozenset(found)

    @property
    def is_pi5(self) -> bool:
        return "pi5" in self.filters

    @property
    def bluetooth_on_pl011(self) -> bool:
        """Boards whose Bluetooth takes the PL011, leaving GPIO 14/15 the mini UART."""
        return bool(self.filters & {"pi3", "pi4", "pi02", "pi0w"})


def raspberry_pi(host: Host) -> PiModel | None:
    """This board when it is a Raspberry Pi, else None."""
    text = host.read_text(MODEL_FILE)
    if text is None:
        return None
    text = text.rstrip("\x00\n ")
    return PiModel(text) if text.startswith("Raspberry Pi") else None


@dataclass(frozen=True, slots=True)
class BootConfig:
    """The lines of ``config.txt`` that apply to this board, comments removed."""

    path: str  # the system path, for the fix
    lines: tuple[str, ...]

    @classmethod
    def parse(cls, path: str, text: str, model: PiModel) -> BootConfig:
        applies = True
        kept: list[str] = []
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            section = re.fullmatch(r"\[([^\]]*)\]", line)
            if section:
                applies = section.group(1).strip().lower() in model.filters
            elif applies:
                kept.append(line)
        return cls(path, tuple(kept))

    def value(self, key: str) -> str | None:
        """The last ``key=value`` (the firmware keeps the last)."""
        found = None
        for line in self.lines:
            name, sep, value = line.partition("=")
            if sep and name.strip() == key:
                found = value.strip()
        return found

    def overlays(self) -> list[tuple[str, dict[str, str]]]:
        """Every ``dtoverlay=name,param=value,…``, in order."""
        found = []
        for line in self.lines:
            name, sep, value = line.partition("=")
            if sep and name.strip() == "dtoverlay" and value.strip():
                first, *params = value.strip().split(",")
                found.append((first.strip(), dict(_param(p) for p in params)))
        return found

    def dtparam(self, name: str) -> str | None:
        """``dtparam=name=value`` (``dtparam=a=on,b=off`` included); ``on`` for a bare name."""
        found = None
        for line in self.lines:
            key, sep, value = line.partition("=")
            if sep and key.strip() == "dtparam":
                for part in value.split(","):
                    k, v = _param(part)
                    if k == name:
                        found = v
        return found

    def has_overlay(self, *names: str) -> bool:
        return self.overlay_line(*names) is not None

    def overlay_line(self, *names: str) -> str | None:
        """The ``dtoverlay=`` line loading one of ``names``, as written."""
        for line in self.lines:
            key, sep, value = line.partition("=")
            if sep and key.strip() == "dtoverlay" and value.split(",")[0].strip() in names:
                return line
        return None


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.strip().partition("=")
    return key.strip(), value.strip() if sep else "on"


def boot_dir(host: Host) -> str | None:
    for directory in BOOT_DIRS:
        if host.exists(f"{directory}/config.txt"):
            return directory
    return None


def boot_config(host: Host, model: PiModel) -> BootConfig | None:
    directory = boot_dir(host)
    if directory is None:
        return None
    path = f"{directory}/config.txt"
    return BootConfig.parse(path, host.read_text(path) or "", model)


def _on(value: str | None) -> bool:
    return value is not None and value.lower() in {"on", "1", "true", "yes"}


def check_uart(host: Host, model: PiModel) -> Finding:
    """The GPS's UART on GPIO 14/15 enabled, and the PL011 there rather than the mini UART
    (whose baud rate follows the VPU's clock)."""
    config = boot_config(host, model)
    if config is None:
        return Finding(
            "uart",
            Verdict.FAIL,
            f"no config.txt in {' or '.join(BOOT_DIRS)}: is the boot partition mounted?",
            ("sudo mount /boot/firmware   # or check /etc/fstab",),
        )
    where = f"under [all] in {config.path}, then `sudo reboot`"
    if model.is_pi5:
        # Raspberry Pi 5: GPIO 14/15 are UART0 (/dev/ttyAMA0), off by default; Bluetooth and
        # the debug UART have their own.
        if _on(config.dtparam("uart0")):
            return Finding("uart", Verdict.OK, f"dtparam=uart0=on in {config.path} (Pi 5)")
        return Finding(
            "uart",
            Verdict.FAIL,
            f"UART0 (GPIO 14/15) is off: no dtparam=uart0=on in {config.path}",
            (f"add the line `dtparam=uart0=on` {where}",),
        )
    problems: list[tuple[Verdict, str, str]] = []
    enable = config.value("enable_uart")
    if model.bluetooth_on_pl011:
        if enable != "1":
            problems.append(
                (
                    Verdict.FAIL,
                    f"enable_uart={enable or '(unset, 0 on this board)'}",
                    f"add the line `enable_uart=1` {where}",
                )
            )
        if not config.has_overlay("disable-bt", "pi3-disable-bt", "miniuart-bt", "pi3-miniuart-bt"):
            problems.append(
                (
                    Verdict.WARN,
                    "Bluetooth holds the PL011: GPIO 14/15 is the mini UART (ttyS0)",
                    f"add the line `dtoverlay=disable-bt` {where}; "
                    "then `sudo systemctl disable hciuart`",
                )
            )
    elif enable == "0":
        problems.append(
            (Verdict.FAIL, "enable_uart=0", f"change it to `enable_uart=1` in {config.path}")
        )
    if not problems:
        return Finding("uart", Verdict.OK, f"UART on GPIO 14/15 enabled ({config.path})")
    return Finding(
        "uart",
        worst([v for v, _, _ in problems]),
        "; ".join(s for _, s, _ in problems) + f" ({config.path})",
        tuple(f for _, _, f in problems),
    )


def check_console(host: Host, model: PiModel, gps_device: str | None) -> Finding:
    """No kernel console and no login prompt on the GPS's UART: either would write into the
    receiver's line and read its sentences as keystrokes."""
    if not gps_device:
        return Finding("console", Verdict.SKIP, "no GPS configured ([gps] device)")
    resolved = host.resolve(gps_device) or gps_device
    names = {gps_device.rsplit("/", 1)[-1], resolved.rsplit("/", 1)[-1]}
    if names & UART_NAMES or any(n.startswith(("ttyAMA", "ttyS")) for n in names):
        names |= UART_NAMES  # the Pi's UART, under any of its names
    directory = boot_dir(host)
    problems: list[str] = []
    fixes: list[str] = []
    if directory is not None:
        path = f"{directory}/cmdline.txt"
        for token in (host.read_text(path) or "").split():
            key, _, value = token.partition("=")
            if key == "console" and value.split(",")[0] in names:
                problems.append(f"{token} in {path}")
                fixes.append(
                    f"remove `{token}` from {path} (it stays one line), or run "
                    "`sudo raspi-config nonint do_serial_cons 1`; then `sudo reboot`"
                )
    for name in sorted(names):
        unit = f"serial-getty@{name}.service"
        if host.exists(f"/etc/systemd/system/getty.target.wants/{unit}"):
            problems.append(f"a login prompt ({unit}) on it")
            fixes.append(f"sudo systemctl disable --now {unit}")
    if not problems:
        return Finding("console", Verdict.OK, "no serial console on the GPS's UART")
    return Finding(
        "console",
        Verdict.FAIL,
        "serial console on the GPS's UART: " + "; ".join(problems),
        tuple(fixes),
    )
