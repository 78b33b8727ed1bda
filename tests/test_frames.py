"""Server frames and the combined wrapper, checked by independent parsers.

Every test runs against the compiled module and its pure-Python twin (``c-frames`` /
``py-frames``). Frames are read back by wsproto (as a client would) and by websockets'
own frame parser; combined payloads are read back by orjson.
"""

from __future__ import annotations

import importlib
import struct
from types import ModuleType

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from wsproto.frame_protocol import FrameProtocol
from wsproto.frame_protocol import Opcode as WsprotoOpcode

IMPLEMENTATIONS = {"c-frames": "tickhub._ext.frames", "py-frames": "tickhub._ext.frames_py"}
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20]
PUBLIC = ["frame_header", "build_frame", "combined_payload", "combined_prefix", "build_combined_frame"]


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # a missing build must fail loudly, not skip
        pytest.fail(f"{name} is not importable ({exc}); build with setup.py build_ext --inplace")


@pytest.fixture(params=list(IMPLEMENTATIONS), scope="module")
def frames(request: pytest.FixtureRequest) -> ModuleType:
    return _import(IMPLEMENTATIONS[request.param])


def _payload(size: int) -> bytes:
    # ASCII so the same bytes are a valid text payload (wsproto checks UTF-8).
    return bytes(0x41 + i % 26 for i in range(size))


def _read_with_wsproto(stream: bytes) -> list[tuple[WsprotoOpcode, bytes]]:
    """Whole messages as a WebSocket client sees them in ``stream``."""
    protocol = FrameProtocol(client=True, extensions=[])
    protocol.receive_bytes(stream)
    messages: list[tuple[WsprotoOpcode, bytes]] = []
    parts: list[bytes] = []
    for frame in protocol.received_frames():
        payload = frame.payload
        parts.append(payload.encode() if isinstance(payload, str) else bytes(payload))
        if frame.message_finished:
            messages.append((frame.opcode, b"".join(parts)))
            parts = []
    assert not parts, "a message was left unfinished"
    return messages


def _read_with_websockets(data: bytes) -> tuple[Frame, bytes]:
    """One frame parsed by websockets, and whatever bytes were left after it."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
    try:
        next(parser)
    except StopIteration as done:
        rest = reader.buffer
        return done.value, bytes(rest)
    raise AssertionError("websockets wanted more bytes than the frame has")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("opcode_name", ["OP_TEXT", "OP_BINARY"])
def test_frame_is_read_back_by_wsproto_and_websockets(
    frames: ModuleType, size: int, opcode_name: str
) -> None:
    payload = _payload(size)
    opcode = getattr(frames, opcode_name)
    frame = frames.build_frame(payload, opcode)

    expected_opcode = WsprotoOpcode.TEXT if opcode_name == "OP_TEXT" else WsprotoOpcode.BINARY
    assert _read_with_wsproto(frame) == [(expected_opcode, payload)]

    parsed, rest = _read_with_websockets(frame)
    assert (parsed.fin, parsed.rsv1, parsed.rsv2, parsed.rsv3) == (True, False, False, False)
    assert parsed.opcode == (Opcode.TEXT if opcode_name == "OP_TEXT" else Opcode.BINARY)
    assert parsed.data == payload
    assert rest == b""


@pytest.mark.parametrize(
    ("size", "header_len"),
    [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (1 << 20, 10), (2**63 - 1, 10)],
)
def test_header_uses_the_shortest_length_encoding(
    frames: ModuleType, size: int, header_len: int
) -> None:
    header = frames.frame_header(size, frames.OP_BINARY)
    assert len(header) == header_len
    assert header[0] == 0x82  # FIN + binary, no RSV bits
    assert header[1] & 0x80 == 0  # server frames are never masked
    if header_len == 2:
        assert header[1] == size
    elif header_len == 4:
        assert header[1] == 126 and struct.unpack("!H", header[2:])[0] == size
    else:
        assert header[1] == 127 and struct.unpack("!Q", header[2:])[0] == size


def test_header_is_the_prefix_of_the_frame(frames: ModuleType) -> None:
    for size in SIZES:
        payload = _payload(size)
        frame = frames.build_frame(payload)
        header = frames.frame_header(size)
        assert frame == header + payload


def test_many_frames_in_one_buffer_read_back_in_order(frames: ModuleType) -> None:
    """A subscriber's pending buffer is frames back to back; a client must split them."""
    prefix = frames.combined_prefix(b"btcusdt@trade")
    messages = [_payload(size) for size in (0, 5, 200, 70000)]
    stream = b"".join(
        frames.build_frame(m) + frames.build_combined_frame(prefix, b'"' + m + b'"')
        for m in messages
    )
    read = _read_with_wsproto(stream)
    assert len(read) == 2 * len(messages)
    for i, message in enumerate(messages):
        assert read[2 * i] == (WsprotoOpcode.TEXT, message)
        assert orjson.loads(read[2 * i + 1][1]) == {"stream": "btcusdt@trade", "data": message.decode()}


@pytest.mark.parametrize(
    "data",
    [b"{}", b"[]", b"1", b"null", b'"x"', b'{"e":"trade","p":"1.0","m":true}',
     '{"s":"\u00e9\u4e2d\U0001f600","k":{"a":[1,2,{"b":null}]}}'.encode()],
)
def test_combined_payload_is_the_binance_wrapper(frames: ModuleType, data: bytes) -> None:
    stream = b"btcusdt@kline_1m@+08:00"
    wrapped = frames.combined_payload(stream, data)
    assert orjson.loads(wrapped) == {"stream": stream.decode(), "data": orjson.loads(data)}
    assert wrapped == frames.combined_prefix(stream) + data + b"}"
    # The data bytes are forwarded untouched, not re-encoded.
    assert wrapped.endswith(b',"data":' + data + b"}")


@pytest.mark.parametrize("size", [0, 100, 105, 106, 65514, 65515, 1 << 20])
def test_combined_frame_carries_the_wrapper(frames: ModuleType, size: int) -> None:
    # Sizes straddle the 7/16/64-bit length boundaries once the 21-byte wrapper and the
    # stream name are added.
    stream = b"ethbtc@depth"
    data = b'"' + _payload(size) + b'"'
    frame = frames.build_combined_frame(frames.combined_prefix(stream), data, frames.OP_TEXT)
    assert _read_with_wsproto(frame) == [(WsprotoOpcode.TEXT, frames.combined_payload(stream, data))]
    binary = frames.build_combined_frame(frames.combined_prefix(stream), data, frames.OP_BINARY)
    assert _read_with_wsproto(binary) == [(WsprotoOpcode.BINARY, frames.combined_payload(stream, data))]


@pytest.mark.parametrize("opcode", [-1, 0, 3, 8, 9, 10, 15, 16])
def test_other_opcodes_are_refused(frames: ModuleType, opcode: int) -> None:
    with pytest.raises(ValueError, match="opcode"):
        frames.frame_header(1, opcode)
    with pytest.raises(ValueError, match="opcode"):
        frames.build_frame(b"x", opcode)
    with pytest.raises(ValueError, match="opcode"):
        frames.build_combined_frame(b'{"stream":"a","data":', b"1", opcode)


def test_bad_lengths_are_refused(frames: ModuleType) -> None:
    with pytest.raises(ValueError, match="length"):
        frames.frame_header(-1)
    with pytest.raises(OverflowError):
        frames.frame_header(2**63)
    with pytest.raises(TypeError):
        frames.frame_header(1.0)


@pytest.mark.parametrize("bad", [bytearray(b"x"), memoryview(b"x"), "x", None])
def test_non_bytes_are_refused(frames: ModuleType, bad: object) -> None:
    with pytest.raises(TypeError):
        frames.build_frame(bad)
    with pytest.raises(TypeError):
        frames.combined_payload(b"a", bad)
    with pytest.raises(TypeError):
        frames.combined_prefix(bad)
    with pytest.raises(TypeError):
        frames.build_combined_frame(bad, b"1")


@pytest.mark.parametrize("name", [b'a"b', b"a\\b", b"a\nb", b"\x00", b"\x1f"])
def test_stream_names_that_need_escaping_are_refused(frames: ModuleType, name: bytes) -> None:
    with pytest.raises(ValueError, match="stream name"):
        frames.combined_payload(name, b"1")
    with pytest.raises(ValueError, match="stream name"):
        frames.combined_prefix(name)


def test_non_ascii_stream_names_pass_verbatim(frames: ModuleType) -> None:
    # Binance symbols may be UTF-8 since 2025-12; the name is not re-encoded.
    name = "币安usdt@trade".encode()
    assert orjson.loads(frames.combined_payload(name, b"1")) == {"stream": name.decode(), "data": 1}


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=300) | st.integers(0, 70000).map(_payload),
    opcode=st.sampled_from([1, 2]),
    stream=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters='"\\'), max_size=30
    ).filter(lambda s: all(ord(c) >= 0x20 for c in s)).map(str.encode),
)
def test_compiled_and_python_build_identical_bytes(payload: bytes, opcode: int, stream: bytes) -> None:
    compiled = _import(IMPLEMENTATIONS["c-frames"])
    python = _import(IMPLEMENTATIONS["py-frames"])
    assert compiled.build_frame(payload, opcode) == python.build_frame(payload, opcode)
    assert compiled.frame_header(len(payload), opcode) == python.frame_header(len(payload), opcode)
    assert compiled.combined_payload(stream, payload) == python.combined_payload(stream, payload)
    prefix = compiled.combined_prefix(stream)
    assert prefix == python.combined_prefix(stream)
    assert compiled.build_combined_frame(prefix, payload, opcode) == python.build_combined_frame(
        prefix, payload, opcode
    )


def test_compiled_module_is_the_extension() -> None:
    """Guards the build layout: frames.pxd must be picked up and the .so must load."""
    compiled = _import(IMPLEMENTATIONS["c-frames"])
    assert compiled.__file__ is not None and compiled.__file__.endswith(".so")
    for name in PUBLIC:
        assert type(getattr(compiled, name)).__name__ in (
            "builtin_function_or_method",
            "cython_function_or_method",
        )
    # OP_* are declared in frames.pxd (cpdef enum): present only if the .pxd was used.
    assert (compiled.OP_TEXT, compiled.OP_BINARY) == (1, 2)
    assert sorted(compiled.__all__) == sorted(_import(IMPLEMENTATIONS["py-frames"]).__all__)
