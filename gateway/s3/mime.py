"""User metadata values beyond US-ASCII, as S3 carries them in headers (RFC 2047).

S3 decodes RFC 2047 encoded-words in an x-amz-meta-* value before storing it, and returns a
stored value that is not plain printable US-ASCII as one encoded-word (``=?UTF-8?B?...?=``),
so what a client wrote in any charset comes back intact and every response header stays ASCII.
"""

from __future__ import annotations

import base64
import binascii
import email.errors
from email.header import decode_header, make_header

# Printable US-ASCII and tab: what a stored value may be returned as without encoding.
_PLAIN = frozenset(chr(code) for code in range(0x20, 0x7F)) | {"\t"}


def stored_value(sent: str) -> str:
    """The value to store for a header value as the server read it.

    Header bytes reach us decoded as UTF-8, undecodable bytes kept as surrogates: such a value
    was ISO-8859-1 (HTTP's historical charset, which S3 reads header bytes as), valid UTF-8 is
    taken as UTF-8. Encoded-words are then decoded.
    """
    raw = sent.encode("utf-8", "surrogateescape")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (email.errors.HeaderParseError, binascii.Error, LookupError, UnicodeError):
        # Not a well-formed encoded-word after all: kept as written.
        return text


def header_value(stored: str) -> str:
    """A stored value as a response header carries it."""
    if all(char in _PLAIN for char in stored):
        return stored
    encoded = base64.b64encode(stored.encode("utf-8", "surrogatepass")).decode("ascii")
    return f"=?UTF-8?B?{encoded}?="
