"""A real headless Chromium (Debian package ``chromium``) for the status pages' tests.

Each call starts the browser with a throwaway profile, under a deadline, against a server on
loopback; the network is otherwise cut (``--host-resolver-rules``), so a page that tried to
fetch anything from outside would show it. Run from the event loop that serves the page:
the browser is an asyncio subprocess, the loop keeps answering while it waits.

:class:`Dom` reads ``--dump-dom``'s output with the standard library's HTML parser: the
elements' tags, attributes and text, for assertions.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

DEADLINE_S = 30.0  # a page loads in well under a second here; this is the hard stop
WINDOW = os.environ.get("HORODATE_CHROMIUM_WINDOW", "1200,900")  # width,height


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium not found: install the Debian package 'chromium' (make system-deps)")
    return found


def _flags(profile: str) -> list[str]:
    flags = [
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW}",
    ]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return flags


async def _run(*args: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="horodate-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium_path(),
            *_flags(profile),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "HOME": profile},
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), DEADLINE_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"chromium did not finish {args} within {DEADLINE_S} s")
    if proc.returncode != 0:
        pytest.fail(f"chromium {args} exited {proc.returncode}: {err.decode(errors='replace')}")
    return out


async def load(url: str, screenshot: Path | None = None) -> Dom:
    """The page's DOM once loaded, as Chromium built it (``--dump-dom``); with
    ``screenshot``, a PNG of it at the window's size too, from the same load."""
    args = ["--dump-dom", url]
    if screenshot is not None:
        args.insert(0, f"--screenshot={screenshot}")
    dom = Dom.parse((await _run(*args)).decode("utf-8"))
    if screenshot is not None and (not screenshot.is_file() or screenshot.stat().st_size == 0):
        pytest.fail(f"chromium wrote no screenshot at {screenshot}")
    return dom


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


@dataclass
class Dom:
    elements: list[Element]
    text: str

    @classmethod
    def parse(cls, html: str) -> Dom:
        parser = _Parser()
        parser.feed(html)
        parser.close()
        return cls(parser.elements, "".join(parser.all_text))

    def all(self, tag: str, cls_: str | None = None) -> list[Element]:
        return [e for e in self.elements if e.tag == tag and (cls_ is None or cls_ in e.classes)]

    def one(self, tag: str, cls_: str | None = None) -> Element:
        found = self.all(tag, cls_)
        assert len(found) == 1, f"expected one <{tag} class={cls_}>, found {len(found)}"
        return found[0]

    def external_references(self) -> list[str]:
        """Every attribute that would make a browser fetch something (or link away) that
        is not this page's own server, and every stylesheet ``url(…)`` or ``@import``."""
        found = []
        for e in self.elements:
            for name, value in e.attrs.items():
                fetches = name in ("src", "href", "srcset", "action", "data", "poster")
                if fetches and ("//" in value or ":" in value.split("/", 1)[0]):
                    found.append(f"<{e.tag} {name}={value!r}>")
            if e.tag in ("script", "link", "iframe", "object", "embed", "img"):
                found.append(f"<{e.tag}>")
        for e in self.all("style"):
            body = "".join(e.text)
            if "url(" in body or "@import" in body:
                found.append("<style> with url() or @import")
        for e in self.elements:
            if "url(" in e.attrs.get("style", ""):
                found.append(f"<{e.tag} style=url()>")
        return found


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.open: list[Element] = []
        self.all_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(element)
        if tag not in ("meta", "br", "img", "link", "input", "hr"):
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i].tag == tag:
                del self.open[i:]
                return

    def handle_data(self, data: str) -> None:
        self.all_text.append(data)
        for element in self.open:
            element.text.append(data)
