import hashlib
import hmac
import struct

import pytest

from fleet.integrations.alarm_panel.framing import (
    Frame,
    FrameError,
    decode_frame,
    encode_frame,
    parse_hmac_key,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_round_trip() -> None:
    framed = encode_frame(KEY, 42, b"\x08\x01hello")
    assert decode_frame(KEY, framed) == Frame(sequence=42, payload=b"\x08\x01hello")


def test_layout_is_length_sequence_payload_and_last_8_bytes_of_hmac() -> None:
    payload = b"abc"
    framed = encode_frame(KEY, 0x01020304, payload)
    header = struct.pack(">HI", 3, 0x01020304)
    assert framed[:6] == header == b"\x00\x03\x01\x02\x03\x04"
    assert framed[6:9] == payload
    full = hmac.new(KEY, header + payload, hashlib.sha256).digest()
    assert framed[9:] == full[-8:]
    assert full[-8:] != full[:8]  # i.e. the test tells the two truncations apart


def test_empty_payload_round_trips() -> None:
    assert decode_frame(KEY, encode_frame(KEY, 0, b"")) == Frame(0, b"")


def test_too_short() -> None:
    with pytest.raises(FrameError) as err:
        decode_frame(KEY, b"\x00" * 13)
    assert err.value.reason == "too_short"


@pytest.mark.parametrize("delta", [-1, 1])
def test_length_mismatch(delta: int) -> None:
    framed = encode_frame(KEY, 1, b"payload")
    damaged = framed[:-1] if delta < 0 else framed + b"\x00"
    with pytest.raises(FrameError) as err:
        decode_frame(KEY, damaged)
    assert err.value.reason == "length_mismatch"


def test_oversized_is_checked_against_the_declared_length() -> None:
    framed = encode_frame(KEY, 1, b"x" * 100)
    assert decode_frame(KEY, framed, max_payload=100).payload == b"x" * 100
    with pytest.raises(FrameError) as err:
        decode_frame(KEY, framed, max_payload=99)
    assert err.value.reason == "oversized"


def test_wrong_key_is_bad_hmac() -> None:
    with pytest.raises(FrameError) as err:
        decode_frame(OTHER_KEY, encode_frame(KEY, 7, b"payload"))
    assert err.value.reason == "bad_hmac"


@pytest.mark.parametrize(
    ("index", "reason"),
    [
        (1, "length_mismatch"),  # the length itself
        (3, "bad_hmac"),  # sequence
        (7, "bad_hmac"),  # payload
        (-1, "bad_hmac"),  # tag
    ],
)
def test_any_flipped_bit_is_caught(index: int, reason: str) -> None:
    framed = bytearray(encode_frame(KEY, 7, b"payload"))
    framed[index] ^= 0x01
    with pytest.raises(FrameError) as err:
        decode_frame(KEY, bytes(framed))
    assert err.value.reason == reason


def test_frame_error_reason_is_its_message() -> None:
    assert str(FrameError("bad_hmac")) == "bad_hmac"


@pytest.mark.parametrize("sequence", [-1, 2**32])
def test_encode_rejects_sequence_outside_u32(sequence: int) -> None:
    with pytest.raises(ValueError, match="u32"):
        encode_frame(KEY, sequence, b"")


def test_encode_rejects_payload_beyond_u16() -> None:
    with pytest.raises(ValueError, match="u16"):
        encode_frame(KEY, 1, b"x" * 65536)


def test_parse_hmac_key() -> None:
    hex64 = "00" * 31 + "Ff"
    assert parse_hmac_key(hex64) == bytes(31) + b"\xff"
    assert parse_hmac_key(f"  {hex64}\n") == bytes(31) + b"\xff"


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("00" * 31, "got 62 characters"),
        ("00" * 33, "got 66 characters"),
        ("", "got 0 characters"),
        ("zz" + "00" * 31, "non-hex"),
    ],
)
def test_parse_hmac_key_rejects(value: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="exactly 64 hex digits") as err:
        parse_hmac_key(value)
    assert complaint in str(err.value)
