"""Envelope recognition and event ids, with orjson as the independent oracle.

Deterministic tests run against the compiled module and its pure-Python twin
(``c-envelope`` / ``py-envelope``); the hypothesis tests feed every generated input to
both and require each to agree with the oracle (and so with each other).

The oracle: a buffer is DATA / RESULT / ERROR exactly when orjson accepts it, it is an
object whose top-level keys (read with the stdlib ``json`` so repeats are visible) are
exactly ``{stream, data}`` (stream a string), ``{result, id}`` or ``{error, id}`` (error
an object), each once; otherwise NONE.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _load_payloads() -> ModuleType:
    """bench/payloads.py, shared with the benchmarks (bench/ is not a package)."""
    path = Path(__file__).resolve().parent.parent / "bench" / "payloads.py"
    spec = importlib.util.spec_from_file_location("tickhub_bench_payloads", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


SAMPLES = _load_payloads().SAMPLES

IMPLEMENTATIONS = {"c-envelope": "tickhub._ext.envelope", "py-envelope": "tickhub._ext.envelope_py"}
NONE_RESULT = (0, None, 0, 0)
MAX_ID = 2**63 - 1
WHITESPACE = b" \t\n\r"


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # a missing build must fail loudly, not skip
        pytest.fail(f"{name} is not importable ({exc}); build with setup.py build_ext --inplace")


@pytest.fixture(params=list(IMPLEMENTATIONS), scope="module")
def envelope(request: pytest.FixtureRequest) -> ModuleType:
    return _import(IMPLEMENTATIONS[request.param])


def _both() -> list[ModuleType]:
    return [_import(name) for name in IMPLEMENTATIONS.values()]


# ------------------------------------------------------------------------------ oracle

_MISSING = object()


def oracle_parse(buf: bytes) -> tuple[int, Any, Any] | None:
    """``(kind, key, value)`` by orjson + json, or None for NONE."""
    try:
        value = orjson.loads(buf)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    keys = [key for key, _ in json.loads(buf, object_pairs_hook=lambda pairs: pairs)]
    if len(keys) != len(set(keys)):
        return None
    if set(keys) == {"stream", "data"} and isinstance(value["stream"], str):
        return (1, value["stream"].encode(), value["data"])
    if set(keys) == {"result", "id"}:
        return (2, value["id"], value["result"])
    if set(keys) == {"error", "id"} and isinstance(value["error"], dict):
        return (3, value["id"], value["error"])
    return None


def check_parse(module: ModuleType, buf: bytes) -> None:
    """parse(buf) must say what the oracle says, with an exact, trimmed value slice."""
    result = module.parse(buf)
    expected = oracle_parse(buf)
    if expected is None:
        assert result == NONE_RESULT, (module.__name__, buf)
        return
    kind, key, start, end = result
    assert kind == expected[0], (module.__name__, buf)
    assert 0 <= start < end <= len(buf)
    value = buf[start:end]
    assert value[0] not in WHITESPACE and value[-1] not in WHITESPACE
    assert orjson.loads(value) == expected[2]
    if kind == 1:
        assert key == expected[1]
    else:
        assert key is not None and key[0] not in WHITESPACE and key[-1] not in WHITESPACE
        assert orjson.loads(key) == expected[1]


def check_parse_everywhere(buf: bytes) -> None:
    compiled, python = _both()
    check_parse(compiled, buf)
    check_parse(python, buf)
    assert compiled.parse(buf) == python.parse(buf)


def oracle_event_id(payload: bytes) -> int:
    value = orjson.loads(payload)
    if not isinstance(value, dict):
        return -1

    def usable(key: str) -> int:
        number = value.get(key)
        return number if type(number) is int and 0 <= number <= MAX_ID else -1

    event_type = value.get("e", _MISSING)
    field = {"trade": "t", "aggTrade": "a", "depthUpdate": "u"}.get(
        event_type if isinstance(event_type, str) else "", None
    )
    if field is not None:
        return usable(field)
    if event_type is not _MISSING:
        return usable("E")
    for key in ("u", "lastUpdateId"):
        if key in value:
            return usable(key)
    return usable("E")


# ------------------------------------------------------------------------------ rendering
# JSON text with the variety a parser must survive: random whitespace, escapes chosen per
# character (short, \u, surrogate pairs), several spellings of numbers.

DrawFn = Callable[[st.SearchStrategy[Any]], Any]

_ws = st.sampled_from(["", "", "", " ", "\n", "\t", " \r\n "])
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def render_string(draw: DrawFn, text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        must_escape = char in '"\\' or code < 0x20
        how = draw(st.integers(0, 9))
        if how == 0 or (must_escape and how < 5):
            if code >= 0x10000:
                high = 0xD800 + ((code - 0x10000) >> 10)
                low = 0xDC00 + ((code - 0x10000) & 0x3FF)
                out.append(f"\\u{high:04x}\\u{low:04X}")
            else:
                out.append(f"\\u{code:04x}" if how % 2 else f"\\u{code:04X}")
        elif must_escape or (char in _SHORT_ESCAPES and how == 1):
            out.append(_SHORT_ESCAPES.get(char) or f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def render(draw: DrawFn, value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        if value == 0 and draw(st.booleans()):
            return "-0"
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and draw(st.booleans()):
            text = text.replace("e", "E").replace("E+", "E")
        return text
    if isinstance(value, str):
        return render_string(draw, value)
    if isinstance(value, list):
        if not value:
            return "[" + draw(_ws) + "]"
        return "[" + ",".join(draw(_ws) + render(draw, item) + draw(_ws) for item in value) + "]"
    assert isinstance(value, dict)
    return render_object(draw, list(value.items()))


def render_object(draw: DrawFn, pairs: list[tuple[str, Any]]) -> str:
    if not pairs:
        return "{" + draw(_ws) + "}"
    members = [
        draw(_ws) + render_string(draw, key) + draw(_ws) + ":" + draw(_ws) + render(draw, item) + draw(_ws)
        for key, item in pairs
    ]
    return "{" + ",".join(members) + "}"


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 + 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5),
    max_leaves=25,
)
stream_names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24) | st.sampled_from(
    [s.stream.decode() for s in SAMPLES.values()] + ["!serverShutdown", "btcusdt@kline_1m@+08:00"]
)
ids = st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=36)


@st.composite
def envelopes(draw: DrawFn) -> bytes:
    """A well-formed DATA, RESULT or ERROR envelope, keys in random order."""
    shape = draw(st.sampled_from(["data", "result", "error"]))
    if shape == "data":
        pairs = [("stream", draw(stream_names)), ("data", draw(json_values))]
    elif shape == "result":
        pairs = [("result", draw(json_values)), ("id", draw(ids))]
    else:
        error = draw(st.dictionaries(_text, json_values, max_size=3) | st.just({"code": 2, "msg": "Invalid request"}))
        pairs = [("error", error), ("id", draw(ids))]
    pairs = draw(st.permutations(pairs))
    return (draw(_ws) + render_object(draw, pairs) + draw(_ws)).encode("utf-8")


@st.composite
def near_envelopes(draw: DrawFn) -> bytes:
    """Objects over the envelope keys plus a stray one, with repeats and wrong types."""
    keys = st.sampled_from(["stream", "data", "result", "error", "id", "extra", "Stream"])
    pairs = draw(st.lists(st.tuples(keys, json_values), min_size=0, max_size=4))
    return render_object(draw, pairs).encode("utf-8")


_interesting_bytes = st.sampled_from(list(b'"{}[],:\\ 0-1e.+tfnu\n\x00\x1f\x7f\x80\xbf\xc3\xed\xf0\xff'))


@st.composite
def mutated(draw: DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    buf = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(buf)))
        byte = draw(_interesting_bytes | st.integers(0, 255))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "insert" or pos == len(buf):
            buf.insert(pos, byte)
        elif action == "replace":
            buf[pos] = byte
        else:
            del buf[pos]
    return bytes(buf)


_samples = st.sampled_from([s.combined for s in SAMPLES.values()])
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ properties


@FAST
@given(envelopes())
def test_generated_envelopes_agree_with_orjson(buf: bytes) -> None:
    assert oracle_parse(buf) is not None
    check_parse_everywhere(buf)


@FAST
@given(near_envelopes())
def test_wrong_shapes_agree_with_orjson(buf: bytes) -> None:
    check_parse_everywhere(buf)


@FAST
@given(mutated(envelopes() | _samples))
def test_mutated_input_agrees_with_orjson(buf: bytes) -> None:
    check_parse_everywhere(buf)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes())
def test_every_truncation_agrees_with_orjson(buf: bytes) -> None:
    for length in range(len(buf)):
        check_parse_everywhere(buf[:length])


@FAST
@given(envelopes() | _samples, st.binary(min_size=1, max_size=4) | st.sampled_from([b"}", b",", b"]", b"\x00", b" x"]))
def test_trailing_garbage_agrees_with_orjson(buf: bytes, garbage: bytes) -> None:
    check_parse_everywhere(buf + garbage)


@FAST
@given(st.binary(max_size=64))
def test_random_bytes_agree_with_orjson(buf: bytes) -> None:
    check_parse_everywhere(b'{"stream":"x","data":' + buf + b"}")
    check_parse_everywhere(buf)


# ------------------------------------------------------------------------------ fixed cases


@pytest.mark.parametrize("name", list(SAMPLES))
def test_binance_combined_messages_give_stream_and_exact_payload(envelope: ModuleType, name: str) -> None:
    sample = SAMPLES[name]
    buf = sample.combined
    kind, key, start, end = envelope.parse(buf)
    assert (kind, key) == (envelope.KIND_DATA, sample.stream)
    assert buf[start:end] == sample.payload  # forwarded byte for byte


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_truncation_of_binance_messages_is_none(envelope: ModuleType, name: str) -> None:
    buf = SAMPLES[name].combined
    for length in range(len(buf)):
        assert envelope.parse(buf[:length]) == NONE_RESULT


@pytest.mark.parametrize(
    ("buf", "expected"),
    [
        (b'{"result":null,"id":1}', (2, b"1", b"null")),
        (b'{"id":312,"result":null}', (2, b"312", b"null")),
        (b'{"result":["btcusdt@aggTrade"],"id":3}', (2, b"3", b'["btcusdt@aggTrade"]')),
        (b'{"result":true,"id":"abc-1"}', (2, b'"abc-1"', b"true")),
        (b'{"result":null,"id":null}', (2, b"null", b"null")),
        (b'{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":2}',
         (3, b"2", b'{"code":2,"msg":"Invalid request: invalid stream"}')),
        (b' {\n "stream" : "a\\u0040b" ,\t"data" : [ 1 , {} ] }\r\n', (1, b"a@b", b"[ 1 , {} ]")),
        (b'{"data":"x","stream":"s"}', (1, b"s", b'"x"')),
        (b'{"\\u0073tream":"s","d\\u0061ta":0}', (1, b"s", b"0")),
        (b'{"stream":"\\ud83d\\ude00\\n\\/","data":0}', (1, "\U0001f600\n/".encode(), b"0")),
        (b'{"stream":"","data":{}}', (1, b"", b"{}")),
    ],
)
def test_known_envelopes(envelope: ModuleType, buf: bytes, expected: tuple[int, bytes, bytes]) -> None:
    kind, key, start, end = envelope.parse(buf)
    assert (kind, key, buf[start:end]) == expected
    check_parse(envelope, buf)


@pytest.mark.parametrize(
    "buf",
    [
        b"", b" ", b"{", b"{}", b"[]", b"null", b'"stream"',
        b'{"stream":"x"}', b'{"data":1}', b'{"id":1}', b'{"result":1}',
        b'{"stream":1,"data":1}', b'{"stream":null,"data":1}',  # stream not a string
        b'{"error":"bad","id":1}', b'{"error":[],"id":1}',  # error not an object
        b'{"stream":"x","data":1,"extra":2}', b'{"result":1,"id":1,"error":{}}',
        b'{"stream":"x","data":1,"id":1}',
        b'{"stream":"x","stream":"y","data":1}', b'{"result":1,"id":1,"id":2}',  # repeated keys
        b'{"stream":"x","data":1}}', b'{"stream":"x","data":1} x', b'{"stream":"x","data":1}\x00',
        b'{"stream":"x","data":01}', b'{"stream":"x","data":1.}', b'{"stream":"x","data":.5}',
        b'{"stream":"x","data":-}', b'{"stream":"x","data":1e}', b'{"stream":"x","data":+1}',
        b'{"stream":"x","data":tru}', b'{"stream":"x","data":nul}', b'{"stream":"x","data":True}',
        b'{"stream":"x","data":[1,]}', b'{"stream":"x","data":{"a":1,}}', b'{"stream":"x","data":[1}',
        b'{"stream":"x","data":{"a"}}', b'{"stream":"x","data":{1:2}}', b'{"stream":"x",}',
        b'{"stream":"x" "data":1}', b'{"stream":"x","data":NaN}', b'{"stream":"x","data":Infinity}',
        b'{"stream":"a\x01b","data":1}', b'{"stream":"a\\x","data":1}', b'{"stream":"\\u12","data":1}',
        b'{"stream":"x","data":"\\ud800"}', b'{"stream":"x","data":"\\udc00\\ud800"}',
        b'{"stream":"x","data":"\\ud800\\u0041"}', b'{"stream":"\\ud800","data":1}',
        b"\xef\xbb\xbf" + b'{"stream":"x","data":1}',  # orjson refuses a BOM
        b'\x0c{"stream":"x","data":1}',  # form feed is not JSON whitespace
    ],
)
def test_malformed_or_foreign_messages_are_none(envelope: ModuleType, buf: bytes) -> None:
    assert oracle_parse(buf) is None
    assert envelope.parse(buf) == NONE_RESULT


@pytest.mark.parametrize(
    "text",
    [b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xf4\x8f\xbf\xbf", b"\xed\x9f\xbf", b"\xee\x80\x80",
     b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
     b"\xf0\x80\x80\x80", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"\x80", b"\xbf",
     b"\xe2\x82", b"\xf0\x9f\x98", b"\xc3", b"\xe2\x28\xa1", b"\xc3\x28"],
)
@pytest.mark.parametrize("where", ["stream", "data"])
def test_utf8_inside_strings_is_judged_like_orjson(envelope: ModuleType, text: bytes, where: str) -> None:
    if where == "stream":
        buf = b'{"stream":"a' + text + b'b","data":1}'
    else:
        buf = b'{"stream":"x","data":{"k":"a' + text + b'b"}}'
    check_parse(envelope, buf)


_DBL_MAX_MIDPOINT = str(2**1024 - 2**970).encode()  # smallest decimal that rounds to inf


@pytest.mark.parametrize(
    "number",
    [b"0", b"-0", b"-0.0", b"1e308", b"1E+308", b"9.9e307", b"1e309", b"-1e309", b"1e-400", b"0e99999",
     b"0.000e99999999999999999", b"1e99999999999999999999", b"1.7976931348623157e308",
     b"1.7976931348623158e308", b"1.7976931348623159e308", b"-1.7976931348623159e308",
     b"18446744073709551615", b"18446744073709551616", b"1" * 308, b"1" * 309, b"1" * 400,
     _DBL_MAX_MIDPOINT, _DBL_MAX_MIDPOINT[:-1] + b"1", _DBL_MAX_MIDPOINT + b"0",
     _DBL_MAX_MIDPOINT[:-1], _DBL_MAX_MIDPOINT[:1] + b"." + _DBL_MAX_MIDPOINT[1:] + b"e308",
     _DBL_MAX_MIDPOINT[:1] + b"." + _DBL_MAX_MIDPOINT[1:-1] + b"e308",
     b"0." + _DBL_MAX_MIDPOINT + b"e309", b"0.0" + _DBL_MAX_MIDPOINT + b"e310",
     b"0.0" + _DBL_MAX_MIDPOINT[:-1] + b"e310"],
)
def test_numbers_are_judged_like_orjson(envelope: ModuleType, number: bytes) -> None:
    """orjson refuses numbers that are infinite as a double; so must parse."""
    check_parse(envelope, b'{"stream":"x","data":' + number + b"}")
    check_parse(envelope, b'{"stream":"x","data":[' + number + b"]}")


@pytest.mark.parametrize(("depth", "valid"), [(1022, True), (1023, True), (1024, False), (100_000, False)])
def test_nesting_limit_is_orjsons(envelope: ModuleType, depth: int, valid: bool) -> None:
    """orjson allows 1024 levels including the envelope; deeper input must not crash us."""
    buf = b'{"stream":"x","data":' + b"[" * depth + b"]" * depth + b"}"
    try:
        orjson.loads(buf)
        accepted = True
    except orjson.JSONDecodeError:
        accepted = False
    assert accepted == valid
    kind, key, start, end = envelope.parse(buf)
    assert (kind == envelope.KIND_DATA) == valid
    if valid:
        assert (key, end - start) == (b"x", 2 * depth)
    # Unclosed, as a hostile peer would send it.
    assert envelope.parse(b'{"stream":"x","data":' + b"[" * depth) == NONE_RESULT


def test_none_is_one_shape(envelope: ModuleType) -> None:
    assert (envelope.KIND_NONE, envelope.KIND_DATA, envelope.KIND_RESULT, envelope.KIND_ERROR) == (0, 1, 2, 3)
    assert envelope.parse(b"junk") == NONE_RESULT


@pytest.mark.parametrize("bad", [bytearray(b"{}"), memoryview(b"{}"), "{}", None])
def test_non_bytes_are_refused(envelope: ModuleType, bad: object) -> None:
    with pytest.raises(TypeError):
        envelope.parse(bad)
    with pytest.raises(TypeError):
        envelope.event_id(bad)


# ------------------------------------------------------------------------------ event_id


@pytest.mark.parametrize("name", list(SAMPLES))
def test_event_id_of_binance_payloads(envelope: ModuleType, name: str) -> None:
    sample = SAMPLES[name]
    assert envelope.event_id(sample.payload) == sample.event_id == oracle_event_id(sample.payload)
    # And on the slice parse() hands over, as the upstream de-duplicator uses it.
    _, _, start, end = envelope.parse(sample.combined)
    assert envelope.event_id(sample.combined[start:end]) == sample.event_id


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"e":"kline","E":7,"s":"X","k":{"t":1,"T":2}}', 7),  # nested k.t is not the id
        (b'{"k":{"t":1,"u":3,"e":"trade"},"e":"kline","E":7}', 7),
        (b'{"t":5,"E":9,"e":"trade"}', 5),  # key order does not matter
        (b'{"e":"trade","E":9}', -1),  # the type's own id is missing: no fallback to E
        (b'{"e":"trade","t":"5"}', -1),  # a string is not an integer id
        (b'{"e":"trade","t":5.0}', -1),
        (b'{"e":"trade","t":5e0}', -1),
        (b'{"e":"trade","t":-5}', -1),
        (b'{"e":"trade","t":-0}', 0),
        (b'{"e":"trade","t":9223372036854775807}', MAX_ID),
        (b'{"e":"trade","t":9223372036854775808}', -1),
        (b'{"e":"trade","t":123456789012345678901234567890}', -1),
        (b'{"e":"aggTrade","t":1,"a":2}', 2),
        (b'{"e":"depthUpdate","U":1,"u":2}', 2),
        (b'{"e":"24hrTicker","E":3,"u":1}', 3),
        (b'{"e":1,"E":3}', 3),
        (b'{"u":4,"lastUpdateId":5}', 4),
        (b'{"lastUpdateId":5,"bids":[],"asks":[]}', 5),
        (b'{"E":6}', 6),
        (b'{"\\u0065":"tr\\u0061de","\\u0074":8}', 8),  # escaped keys and type name
        (b'{}', -1), (b"[]", -1), (b'[{"e":"trade","t":1}]', -1), (b"1", -1), (b"", -1),
        (b'{"s":"X"}', -1), (b'{"e":"trade","t":1', 1),  # decided before the cut
        (b'{"e":"trade","E":1,"t"', -1), (b'{"e":"trade","e":"trade","t":1}', -1),
    ],
)
def test_event_id_rules(envelope: ModuleType, payload: bytes, expected: int) -> None:
    assert envelope.event_id(payload) == expected


_event_keys = st.sampled_from(["e", "t", "a", "u", "E", "lastUpdateId", "s", "k", "U", "b", "T"]) | _text
_event_values = st.recursive(
    st.integers(-5, 2**64 + 5)
    | st.sampled_from(["trade", "aggTrade", "depthUpdate", "kline", "Trade", "bookTicker"])
    | _scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_event_keys, children, max_size=4),
    max_leaves=12,
)


@st.composite
def event_payloads(draw: DrawFn) -> bytes:
    pairs = list(draw(st.dictionaries(_event_keys, _event_values, max_size=7)).items())
    return (draw(_ws) + render_object(draw, pairs) + draw(_ws)).encode("utf-8")


@FAST
@given(event_payloads())
def test_event_id_agrees_with_orjson(payload: bytes) -> None:
    expected = oracle_event_id(payload)
    for module in _both():
        assert module.event_id(payload) == expected, module.__name__


@FAST
@given(mutated(event_payloads() | st.sampled_from([s.payload for s in SAMPLES.values()])))
def test_event_id_on_damaged_input_never_fails_and_twins_agree(payload: bytes) -> None:
    compiled, python = _both()
    result = compiled.event_id(payload)
    assert result == python.event_id(payload)
    assert -1 <= result <= MAX_ID


def test_compiled_module_is_the_extension() -> None:
    """Guards the build layout: envelope.pxd must be picked up and the .so must load."""
    compiled = _import(IMPLEMENTATIONS["c-envelope"])
    assert compiled.__file__ is not None and compiled.__file__.endswith(".so")
    for name in ("parse", "event_id"):
        assert type(getattr(compiled, name)).__name__ in (
            "builtin_function_or_method",
            "cython_function_or_method",
        )
    # KIND_* are declared in envelope.pxd (cpdef enum): present only if the .pxd was used.
    assert (compiled.KIND_NONE, compiled.KIND_DATA, compiled.KIND_RESULT, compiled.KIND_ERROR) == (0, 1, 2, 3)
    assert sorted(compiled.__all__) == sorted(_import(IMPLEMENTATIONS["py-envelope"]).__all__)
