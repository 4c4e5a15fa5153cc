"""HMAC-tagged framing used by alarm panels in both directions.

Layout: ``[payload_len u16 BE][sequence u32 BE][payload][tag 8 bytes]`` where
``tag`` is the *last* 8 bytes of HMAC-SHA256(key, header + payload).
"""

from __future__ import annotations

import hmac
import re
import struct

from fleet.core.records import record

_HEADER = struct.Struct(">HI")
HEADER_SIZE = _HEADER.size  # 6
TAG_SIZE = 8
MAX_SEQUENCE = 0xFFFFFFFF
MAX_WIRE_PAYLOAD = 0xFFFF  # what a u16 length can express
KEY_SIZE = 32

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class FrameError(ValueError):
    """A frame that must be dropped. ``reason`` is a stable metrics label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@record
class Frame:
    sequence: int
    payload: bytes


def _tag(key: bytes, signed: bytes) -> bytes:
    # hmac.digest is OpenSSL's one-shot HMAC: about a third of the cost of an hmac.new object.
    return hmac.digest(key, signed, "sha256")[-TAG_SIZE:]


def encode_frame(key: bytes, sequence: int, payload: bytes) -> bytes:
    """Frame ``payload`` with its length, ``sequence`` and HMAC tag."""
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence must fit in u32, got {sequence}")
    if len(payload) > MAX_WIRE_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a u16 length")
    signed = _HEADER.pack(len(payload), sequence) + payload
    return signed + _tag(key, signed)


def decode_frame(key: bytes, data: bytes, max_payload: int = 4096) -> Frame:
    """Verify and unwrap one frame; raise FrameError if it must be dropped.

    The length checks run before the HMAC so that garbage is rejected cheaply and
    with a more useful reason than ``bad_hmac``.
    """
    if len(data) < HEADER_SIZE + TAG_SIZE:
        raise FrameError("too_short")
    payload_len, sequence = _HEADER.unpack_from(data)
    if payload_len > max_payload:
        raise FrameError("oversized")
    if len(data) != HEADER_SIZE + payload_len + TAG_SIZE:
        raise FrameError("length_mismatch")
    signed = data[:-TAG_SIZE]
    if not hmac.compare_digest(_tag(key, signed), data[-TAG_SIZE:]):
        raise FrameError("bad_hmac")
    return Frame(sequence, signed[HEADER_SIZE:])


def parse_hmac_key(hex64: str) -> bytes:
    """Parse the fleet's shared 32-byte HMAC key from its 64-hex-digit form.

    Surrounding whitespace (a trailing newline from a secrets file) is ignored. The
    error never echoes the key, since the bad value may still be a near-secret.
    """
    candidate = hex64.strip()
    expected = "HMAC key must be exactly 64 hex digits (32 bytes)"
    if len(candidate) != 2 * KEY_SIZE:
        raise ValueError(f"{expected}, got {len(candidate)} characters")
    if not _HEX64.fullmatch(candidate):
        raise ValueError(f"{expected}, found non-hex characters")
    return bytes.fromhex(candidate)
