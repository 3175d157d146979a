"""Strict DER: a small reader and the few encoders the fast token path needs.

Only what the RFC 3161 request and response shapes use: single-byte tags, definite
minimal lengths (at most 3 length octets, i.e. < 16 MiB), INTEGER, BOOLEAN, NULL, OBJECT
IDENTIFIER, OCTET STRING, BIT STRING, UTF8String, GeneralizedTime and constructed types.
The reader never recurses and never allocates more than its input, so hostile lengths or
nesting cost nothing (X.690 §8 and §10 are the rules checked).
"""

from __future__ import annotations

import functools

__all__ = [
    "DerError",
    "bit_string_named",
    "boolean",
    "encode_integer",
    "encode_oid",
    "expect",
    "header",
    "read_boolean",
    "read_integer",
    "read_null",
    "read_oid",
    "read_tlv",
    "tlv",
]

# Universal tags (X.690 §8): class universal, primitive unless noted.
BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
UTF8_STRING = 0x0C
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30  # constructed
SET = 0x31  # constructed

_MAX_LENGTH_OCTETS = 3
MAX_OID_BYTES = 64  # an OID longer than this is refused rather than decoded


class DerError(ValueError):
    """The bytes are not the strict DER of the expected shape (internal to ``appliance.tsa``)."""


# --- reading --------------------------------------------------------------------------------


def read_tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Read one TLV at ``buf[pos:end]``; return ``(tag, content_start, content_end)``."""
    if end - pos < 2:
        raise DerError("truncated: no room for a tag and a length")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("high-tag-number form is not used by this structure")
    n = buf[pos + 1]
    pos += 2
    if n < 0x80:
        length = n
    elif n == 0x80:
        raise DerError("indefinite length is not DER")  # X.690 §10.1
    else:
        k = n & 0x7F
        if k > _MAX_LENGTH_OCTETS:
            raise DerError("length too large")
        if end - pos < k:
            raise DerError("truncated length")
        if buf[pos] == 0:
            raise DerError("length not minimally encoded")  # X.690 §10.1
        length = int.from_bytes(buf[pos : pos + k], "big")
        if length < 0x80:
            raise DerError("long-form length for a short value")  # X.690 §10.1
        pos += k
    if length > end - pos:
        raise DerError("truncated: length runs past the end")
    return tag, pos, pos + length


def expect(buf: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    """Read a TLV that must carry ``tag``; return its content span."""
    t, start, stop = read_tlv(buf, pos, end)
    if t != tag:
        raise DerError(f"{what}: expected tag 0x{tag:02x}, found 0x{t:02x}")
    return start, stop


def read_integer(buf: bytes, start: int, stop: int, what: str) -> int:
    """Decode INTEGER content, refusing non-minimal encodings (X.690 §8.3.2)."""
    if stop <= start:
        raise DerError(f"{what}: empty INTEGER")
    if stop - start > 1:
        b0, b1 = buf[start], buf[start + 1]
        if (b0 == 0x00 and b1 < 0x80) or (b0 == 0xFF and b1 >= 0x80):
            raise DerError(f"{what}: INTEGER not minimally encoded")
    return int.from_bytes(buf[start:stop], "big", signed=True)


def read_boolean(buf: bytes, start: int, stop: int, what: str) -> bool:
    """Decode BOOLEAN content: exactly one octet, 0x00 or 0xFF (X.690 §11.1)."""
    if stop - start != 1 or buf[start] not in (0x00, 0xFF):
        raise DerError(f"{what}: BOOLEAN must be one octet 00 or FF")
    return buf[start] == 0xFF


def read_null(start: int, stop: int, what: str) -> None:
    if stop != start:
        raise DerError(f"{what}: NULL with content")


def read_oid(buf: bytes, start: int, stop: int, what: str) -> str:
    """Decode OBJECT IDENTIFIER content to dotted form (X.690 §8.19)."""
    if stop <= start:
        raise DerError(f"{what}: empty OBJECT IDENTIFIER")
    if stop - start > MAX_OID_BYTES:
        raise DerError(f"{what}: OBJECT IDENTIFIER longer than {MAX_OID_BYTES} bytes")
    try:
        return _decode_oid(buf[start:stop])
    except DerError as e:
        raise DerError(f"{what}: {e}") from None


@functools.lru_cache(maxsize=256)  # the same few OIDs arrive in every request
def _decode_oid(content: bytes) -> str:
    if content[-1] & 0x80:
        raise DerError("OBJECT IDENTIFIER truncated inside a sub-identifier")
    arcs: list[int] = []
    value = 0
    first_octet = True
    for b in content:
        if first_octet and b == 0x80:
            raise DerError("OBJECT IDENTIFIER sub-identifier not minimal")
        value = (value << 7) | (b & 0x7F)
        first_octet = not (b & 0x80)
        if first_octet:
            arcs.append(value)
            value = 0
    head = arcs[0]
    first, second = (head // 40, head % 40) if head < 80 else (2, head - 80)
    return ".".join(map(str, (first, second, *arcs[1:])))


# --- writing --------------------------------------------------------------------------------


def header(tag: int, length: int) -> bytes:
    """Tag and minimal definite length (X.690 §10.1)."""
    if length < 0x80:
        return bytes((tag, length))
    if length < 0x100:
        return bytes((tag, 0x81, length))
    if length < 0x10000:
        return bytes((tag, 0x82, length >> 8, length & 0xFF))
    if length < 0x1000000:
        return bytes((tag, 0x83, length >> 16, (length >> 8) & 0xFF, length & 0xFF))
    raise ValueError("DER value too long for this encoder")


def tlv(tag: int, content: bytes) -> bytes:
    return header(tag, len(content)) + content


def encode_integer(value: int) -> bytes:
    """INTEGER TLV, minimal two's complement (X.690 §8.3)."""
    n = (value + (value < 0)).bit_length() // 8 + 1
    content = value.to_bytes(n, "big", signed=True)
    return bytes((INTEGER, n)) + content if n < 0x80 else tlv(INTEGER, content)


def boolean(value: bool) -> bytes:
    return b"\x01\x01\xff" if value else b"\x01\x01\x00"


def encode_oid(dotted: str) -> bytes:
    """OBJECT IDENTIFIER TLV from dotted form (X.690 §8.19)."""
    try:
        arcs = [int(a) for a in dotted.split(".")]
    except ValueError as e:
        raise ValueError(f"not an OID: {dotted!r}") from e
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40) or min(arcs) < 0:
        raise ValueError(f"not an OID: {dotted!r}")
    out = bytearray()
    for arc in (arcs[0] * 40 + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return tlv(OID, bytes(out))


def bit_string_named(bit: int) -> bytes:
    """BIT STRING TLV with one named bit set, trailing zero bits removed (X.690 §11.2.2)."""
    octets = bit // 8 + 1
    content = bytearray(octets)
    content[-1] = 0x80 >> (bit % 8)
    unused = 7 - bit % 8
    return tlv(BIT_STRING, bytes((unused, *content)))
