"""C2SP tlog-tiles arithmetic: tile paths, tile coordinates, entry bundles. Pure.

The vault's log is served as tiles (c2sp.org/tlog-tiles) so that a witness, a mirror or an
auditor follows it with standard tools. A tile at level L, index N holds up to 256 hashes
of tree level 8·L — ``MTH(D[(N·256 + i)·256^L : (N·256 + i + 1)·256^L])`` for i from 0 —
which are exactly the stored complete subtrees (level 8·L, index N·256 + i) of
:mod:`daemon.merkle`: a tile is one range read of the ``nodes`` table. A partial tile
(``.p/W``) holds the first W of them; an entry bundle holds the leaves under a level-0 tile,
each prefixed by its length as a big-endian uint16.

Entry size: the bundle's uint16 prefix caps an entry at 65,535 bytes. A leaf (the RFC 8785
bytes of :mod:`daemon.leaf`) is bounded by the per-member caps of :mod:`daemon.records`,
not by the request body cap: about 3,400 characters of free text in all (the correction's
``reason`` 2,000, four 200-character session members, the 128-character ids and device,
the 64-character establishment code), at most 4 UTF-8 bytes each once canonical (control
characters are refused, so no 6-byte ``\\uXXXX`` escape), plus fixed members and 64-hex
commitments: under 16 KiB (``tests/daemon/test_tiles.py`` builds the largest leaf the rules
allow). Should the caps ever grow past the prefix, :func:`encode_bundle` refuses the
bundle, naming the entry, rather than write a prefix that wraps around.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from daemon.errors import VaultError

TILE_HEIGHT: Final = 8  # c2sp.org/tlog-tiles: a tile is a subtree of height 8…
TILE_WIDTH: Final = 1 << TILE_HEIGHT  # …256 hashes wide
HASH_BYTES: Final = 32  # SHA-256
MAX_LEVEL: Final = 63  # tlog-tiles: <L> is 0 to 63
MAX_ENTRY_BYTES: Final = 0xFFFF  # tlog-tiles: entries are uint16 length-prefixed
# <N> in groups of three digits: six groups reach 10^18 - 1, beyond any tile of a tree of
# at most 2^63 leaves (N < 2^63 / 256 ≈ 3.6·10^16).
MAX_INDEX_GROUPS: Final = 6
MAX_PATH_CHARS: Final = 64  # the longest valid path is 47 characters

_LEVEL: Final = re.compile(r"0|[1-9][0-9]?")  # decimal, no leading zero
_WIDTH: Final = re.compile(r"[1-9][0-9]{0,2}")
_GROUP: Final = re.compile(r"x[0-9]{3}")
_LAST: Final = re.compile(r"[0-9]{3}")


class TileError(VaultError):
    """A tile or an entry bundle that cannot be made."""


class TilePathError(TileError):
    """A path that is not a tlog-tiles tile or entry bundle path (in canonical form)."""


class EntryTooLarge(TileError):
    """An entry longer than an entry bundle's uint16 length prefix can say."""


@dataclass(frozen=True, slots=True)
class Tile:
    """A hash tile (``tile/<L>/<N>[.p/<W>]``) or an entry bundle (``tile/entries/<N>…``,
    ``entries=True``, whose level is 0: one entry per level-0 hash)."""

    level: int
    index: int
    width: int = TILE_WIDTH  # 256: a full tile; 1 to 255: a partial one
    entries: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_LEVEL or (self.entries and self.level != 0):
            raise TileError(f"no tile level {self.level}")
        if self.index < 0:
            raise TileError(f"no tile index {self.index}")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TileError(f"a tile is 1 to {TILE_WIDTH} wide, not {self.width}")

    @property
    def partial(self) -> bool:
        return self.width < TILE_WIDTH

    @property
    def path(self) -> str:
        """The tile's path below the log's prefix, in canonical form."""
        level = "entries" if self.entries else str(self.level)
        suffix = f".p/{self.width}" if self.partial else ""
        return f"tile/{level}/{format_index(self.index)}{suffix}"

    @property
    def tree_level(self) -> int:
        """The tree level of the hashes the tile holds (the stored nodes' level)."""
        return TILE_HEIGHT * self.level

    @property
    def first(self) -> int:
        """The index, at :attr:`tree_level`, of the tile's first hash (or entry)."""
        return self.index * TILE_WIDTH

    @property
    def end(self) -> int:
        """One past the index, at :attr:`tree_level`, of the tile's last hash (or entry)."""
        return self.first + self.width

    @property
    def leaves_needed(self) -> int:
        """The smallest tree size whose tiles include this one: its last hash covers the
        leaves up to (not including) this index."""
        return self.end << self.tree_level

    def width_in(self, size: int) -> int:
        """How wide the tile at these coordinates is in a tree of ``size`` leaves (0: it is
        empty, not served). tlog-tiles: ``floor(size / 256^L)`` hashes at level L."""
        return max(0, min(TILE_WIDTH, (size >> self.tree_level) - self.first))


def format_index(n: int) -> str:
    """tlog-tiles <N>: zero-padded 3-digit path elements, all but the last with an ``x``
    (1234067 → ``x001/x234/067``)."""
    if n < 0:
        raise TileError(f"no tile index {n}")
    text = f"{n % 1000:03d}"
    while n >= 1000:
        n //= 1000
        text = f"x{n % 1000:03d}/{text}"
    return text


def parse_index(text: str) -> int:
    """The <N> of a tile path, in canonical form only (no leading ``x000`` group): one
    resource, one URL."""
    groups = text.split("/")
    if len(groups) > MAX_INDEX_GROUPS:
        raise TilePathError(f"a tile index has at most {MAX_INDEX_GROUPS} groups of 3 digits")
    *high, last = groups
    if not _LAST.fullmatch(last) or not all(_GROUP.fullmatch(g) for g in high):
        raise TilePathError(
            "a tile index is groups of 3 digits, all but the last prefixed by 'x' "
            "(1234067 is x001/x234/067)"
        )
    if high and high[0] == "x000":
        raise TilePathError("a tile index has no leading x000 group")
    n = 0
    for g in groups:
        n = n * 1000 + int(g.removeprefix("x"))
    return n


def parse_tile_path(path: str) -> Tile:
    """``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]`` (c2sp.org/tlog-tiles), in
    canonical form; anything else raises :class:`TilePathError` saying what is wrong."""
    if len(path) > MAX_PATH_CHARS:
        raise TilePathError(f"a tile path is at most {MAX_PATH_CHARS} characters")
    head, _, rest = path.partition("/")
    level_text, _, rest = rest.partition("/")
    if head != "tile" or not rest:
        raise TilePathError("a tile path is tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]")
    entries = level_text == "entries"
    if entries:
        level = 0
    elif _LEVEL.fullmatch(level_text) and int(level_text) <= MAX_LEVEL:
        level = int(level_text)
    else:
        raise TilePathError(
            f"the tile level is 'entries' or a decimal from 0 to {MAX_LEVEL} without a "
            f"leading zero, not {level_text[:8]!r}"
        )
    width = TILE_WIDTH
    index_text, dot_p, width_text = rest.partition(".p/")
    if dot_p:
        if not _WIDTH.fullmatch(width_text) or int(width_text) >= TILE_WIDTH:
            raise TilePathError(
                f"a partial tile's width is a decimal from 1 to {TILE_WIDTH - 1} without a "
                f"leading zero, not {width_text[:8]!r}"
            )
        width = int(width_text)
    return Tile(level=level, index=parse_index(index_text), width=width, entries=entries)


def encode_bundle(entries: Iterable[bytes], *, first: int = 0) -> bytes:
    """An entry bundle: each entry prefixed by its length, a big-endian uint16
    (tlog-tiles, "Log entries"); ``first`` is the first entry's index, for the errors."""
    out = bytearray()
    for n, data in enumerate(entries, start=first):
        if len(data) > MAX_ENTRY_BYTES:
            raise EntryTooLarge(
                f"entry {n} is {len(data)} bytes: more than the "
                f"{MAX_ENTRY_BYTES} an entry bundle's uint16 length prefix can say"
            )
        out += len(data).to_bytes(2, "big") + data
    return bytes(out)
