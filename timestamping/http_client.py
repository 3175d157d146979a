"""The blocking HTTP transport of RFC 3161 (§3.4), for the command line."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Final

from timestamping.errors import TimestampingError, TsaUnreachable
from timestamping.reply import MAX_REPLY_BYTES

QUERY_CONTENT_TYPE: Final = "application/timestamp-query"  # RFC 3161 §3.4
REPLY_CONTENT_TYPE: Final = "application/timestamp-reply"  # RFC 3161 §3.4


def post_query(
    url: str,
    query_der: bytes,
    *,
    timeout_s: float = 10.0,
    max_reply_bytes: int = MAX_REPLY_BYTES,
) -> bytes:
    """POST a ``TimeStampReq`` to a TSA over HTTP(S) (RFC 3161 §3.4); the reply's DER.

    Raises :class:`TsaUnreachable` for anything that is not a time-stamp reply: connection
    refused, timeout, HTTP error, wrong content type, a reply larger than
    ``max_reply_bytes``.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise TimestampingError(f"{url!r} is not an http:// or https:// URL")
    request = urllib.request.Request(
        url,
        data=query_der,
        method="POST",
        headers={"Content-Type": QUERY_CONTENT_TYPE, "Accept": REPLY_CONTENT_TYPE},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            content_type = resp.headers.get_content_type()
            declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_reply_bytes:
                raise TsaUnreachable(
                    f"the reply from {url} is {declared} bytes, more than the "
                    f"{max_reply_bytes}-byte limit; refused"
                )
            body: bytes = resp.read(max_reply_bytes + 1)
    except urllib.error.HTTPError as e:
        raise TsaUnreachable(f"{url} answered HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise TsaUnreachable(f"cannot reach the TSA at {url}: {e.reason}") from e
    except TimeoutError as e:
        raise TsaUnreachable(f"the TSA at {url} did not answer within {timeout_s} s") from e
    except OSError as e:
        raise TsaUnreachable(f"cannot talk to the TSA at {url}: {e}") from e
    if len(body) > max_reply_bytes:
        raise TsaUnreachable(f"the reply from {url} exceeds {max_reply_bytes} bytes; refused")
    if content_type != REPLY_CONTENT_TYPE:
        raise TsaUnreachable(
            f"{url} did not answer with a time-stamp reply (Content-Type: {content_type})"
        )
    return body
