"""Client control messages: every request shape and every error, with byte-exact replies."""

from __future__ import annotations

import json

import pytest

from tickhub.errors import InvalidStream, ProtocolError
from tickhub.names import StreamRef
from tickhub.protocol import (
    Request,
    encode_error,
    encode_exception,
    encode_result,
    parse_request,
)

UNKNOWN_VARIANT_TAIL = (", expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, "
                        "`SET_PROPERTY`, `GET_PROPERTY`")


def reply_for(text: bytes | str) -> bytes:
    """What the hub would answer to an invalid message (the error reply bytes)."""
    with pytest.raises(ProtocolError) as info:
        parse_request(text)
    return encode_exception(info.value)


# --- valid requests (reference §1.4 table) ----------------------------------------------

def test_subscribe() -> None:
    req = parse_request(b'{"method":"SUBSCRIBE","params":["btcusdt@aggTrade","btcusdt@depth"],'
                        b'"id":1}')
    assert req == Request("SUBSCRIBE", ["btcusdt@aggTrade", "btcusdt@depth"], b"1",
                          (StreamRef("binance", "btcusdt@aggTrade"),
                           StreamRef("binance", "btcusdt@depth")))
    assert encode_result(req.id_raw) == b'{"result":null,"id":1}'


def test_subscribe_canonicalises_and_deduplicates_streams() -> None:
    req = parse_request('{"method":"SUBSCRIBE","params":["BTCUSDT@trade","btcusdt@trade",'
                        '"btcusdt@depth@1000ms","btcusdt@depth"],"id":"a1"}')
    assert [s.key for s in req.streams] == ["btcusdt@trade", "btcusdt@depth"]
    assert req.id_raw == b'"a1"'


def test_unsubscribe() -> None:
    req = parse_request(b'{"method":"UNSUBSCRIBE","params":["btcusdt@depth"],"id":312}')
    assert req.method == "UNSUBSCRIBE" and [s.key for s in req.streams] == ["btcusdt@depth"]
    assert encode_result(req.id_raw) == b'{"result":null,"id":312}'


def test_subscribe_with_empty_params_is_a_no_op_request() -> None:
    assert parse_request(b'{"method":"SUBSCRIBE","params":[],"id":1}').streams == ()


def test_list_subscriptions() -> None:
    req = parse_request(b'{"method":"LIST_SUBSCRIPTIONS","id":3}')
    assert (req.method, req.params, req.id_raw, req.streams) == ("LIST_SUBSCRIPTIONS", [],
                                                                 b"3", ())
    assert encode_result(req.id_raw, ["btcusdt@aggTrade"]) == \
        b'{"result":["btcusdt@aggTrade"],"id":3}'
    assert parse_request(b'{"method":"LIST_SUBSCRIPTIONS","params":[],"id":3}').params == []


def test_set_property() -> None:
    req = parse_request(b'{"method":"SET_PROPERTY","params":["combined",true],"id":5}')
    assert (req.property_name, req.property_value) == ("combined", True)
    assert encode_result(req.id_raw) == b'{"result":null,"id":5}'
    assert parse_request(b'{"method":"SET_PROPERTY","params":["combined",false],"id":5}'
                         ).property_value is False


def test_get_property() -> None:
    req = parse_request(b'{"method":"GET_PROPERTY","params":["combined"],"id":2}')
    assert req.property_name == "combined"
    assert encode_result(req.id_raw, True) == b'{"result":true,"id":2}'


def test_whitespace_unknown_keys_and_str_input() -> None:
    req = parse_request(' {\n "id" : 7 , "method" : "LIST_SUBSCRIPTIONS", "extra": {"x": 1} }\n')
    assert req.id_raw == b"7"


# --- ids ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("id_json", "id_raw"), [
    ("1", b"1"),
    ("0", b"0"),
    ("-5", b"-5"),
    ("9223372036854775807", b"9223372036854775807"),
    ("-9223372036854775808", b"-9223372036854775808"),
    ('"abc"', b'"abc"'),
    ('"ABC123"', b'"ABC123"'),
    ('""', b'""'),
    ('"' + "a" * 36 + '"', b'"' + b"a" * 36 + b'"'),
    ('"e2a85d9f-07a5-4f94-8d5f-789dc3deb097"', b'"e2a85d9f-07a5-4f94-8d5f-789dc3deb097"'),
    ("null", b"null"),
])
def test_valid_ids_are_echoed(id_json: str, id_raw: bytes) -> None:
    req = parse_request(f'{{"method":"LIST_SUBSCRIPTIONS","id":{id_json}}}')
    assert req.id_raw == id_raw
    assert encode_result(req.id_raw, []) == b'{"result":[],"id":' + id_raw + b"}"


def test_missing_id_is_null() -> None:
    assert parse_request(b'{"method":"LIST_SUBSCRIPTIONS"}').id_raw == b"null"


@pytest.mark.parametrize("id_json", [
    "9223372036854775808", "-9223372036854775809", "18446744073709551615", "1e30",
    "1.5", "true", "false", '"' + "a" * 37 + '"', '"a b"', '"a_b"', '"ü"', "[1]", '{"a":1}',
])
def test_bad_id(id_json: str) -> None:
    assert reply_for(f'{{"method":"SUBSCRIBE","params":[],"id":{id_json}}}') == (
        b'{"error":{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"},'
        b'"id":null}')


# --- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "line", "column"), [
    (b"", 1, 1),
    (b"x", 1, 1),
    (b"{", 1, 2),
    (b'{"method":"SUBSCRIBE",}', 1, 22),
    (b'{"method":\n  SUBSCRIBE}', 2, 3),
    (b'{"id":1} {"id":2}', 1, 10),
    (b"\xff\xfe", 1, 1),
])
def test_invalid_json(text: bytes, line: int, column: int) -> None:
    assert reply_for(text) == (
        b'{"error":{"code":3,"msg":"Invalid JSON: expected value at line %d column %d"},'
        b'"id":null}' % (line, column))


@pytest.mark.parametrize("text", [b"[1,2]", b"1", b'"SUBSCRIBE"', b"null"])
def test_not_an_object(text: bytes) -> None:
    assert reply_for(text) == (
        b'{"error":{"code":2,"msg":"Invalid request: expected a JSON object"},"id":null}')


def test_missing_method() -> None:
    assert reply_for(b'{"params":["btcusdt@trade"],"id":9}') == (
        b'{"error":{"code":2,"msg":"Invalid request: missing field `method`"},"id":9}')


@pytest.mark.parametrize(("method_json", "shown"), [
    ('"SUBSCRIPE"', "SUBSCRIPE"),
    ('"subscribe"', "subscribe"),          # methods are case-sensitive, as on Binance
    ("5", "5"),
    ("null", "null"),
    ('["SUBSCRIBE"]', '["SUBSCRIBE"]'),
])
def test_unknown_method(method_json: str, shown: str) -> None:
    expected = {"error": {"code": 2, "msg": f"Invalid request: unknown variant `{shown}`"
                                            + UNKNOWN_VARIANT_TAIL}, "id": 4}
    assert reply_for(f'{{"method":{method_json},"id":4}}') == json.dumps(
        expected, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("method", ["SUBSCRIBE", "UNSUBSCRIBE"])
def test_subscribe_needs_params_array(method: str) -> None:
    assert reply_for(f'{{"method":"{method}","id":1}}') == (
        b'{"error":{"code":2,"msg":"Invalid request: missing field `params`"},"id":1}')
    assert reply_for(f'{{"method":"{method}","params":"btcusdt@trade","id":1}}') == (
        b'{"error":{"code":2,"msg":"Invalid request: params must be an array"},"id":1}')


def test_invalid_stream_refuses_the_whole_subscribe_with_the_request_id() -> None:
    with pytest.raises(InvalidStream) as info:
        parse_request(b'{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@nope"],'
                      b'"id":2}')
    assert info.value.stream == "btcusdt@nope"
    assert encode_exception(info.value) == (
        b'{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":2}')


@pytest.mark.parametrize("param", ["5", "null", '["btcusdt@trade"]', '"bybit:publicTrade.X"'])
def test_non_string_or_unsupported_stream_param(param: str) -> None:
    assert reply_for(f'{{"method":"SUBSCRIBE","params":[{param}],"id":"x"}}') == (
        b'{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":"x"}')


@pytest.mark.parametrize("text", [
    b'{"method":"LIST_SUBSCRIPTIONS","params":["x"],"id":3}',
    b'{"method":"GET_PROPERTY","params":["combined","x"],"id":3}',
    b'{"method":"SET_PROPERTY","params":["combined",true,1],"id":3}',
])
def test_too_many_parameters(text: bytes) -> None:
    assert reply_for(text) == (
        b'{"error":{"code":2,"msg":"Invalid request: too many parameters"},"id":3}')


@pytest.mark.parametrize("text", [
    b'{"method":"GET_PROPERTY","id":6}',
    b'{"method":"GET_PROPERTY","params":[],"id":6}',
    b'{"method":"GET_PROPERTY","params":[1],"id":6}',
    b'{"method":"SET_PROPERTY","params":[null,true],"id":6}',
    b'{"method":"SET_PROPERTY","params":[],"id":6}',
])
def test_property_name_must_be_a_string(text: bytes) -> None:
    assert reply_for(text) == (
        b'{"error":{"code":2,"msg":"Invalid request: property name must be a string"},"id":6}')


@pytest.mark.parametrize("text", [
    b'{"method":"GET_PROPERTY","params":["Combined"],"id":7}',
    b'{"method":"SET_PROPERTY","params":["timeUnit",true],"id":7}',
])
def test_unknown_property(text: bytes) -> None:
    assert reply_for(text) == b'{"error":{"code":0,"msg":"Unknown property"},"id":7}'


@pytest.mark.parametrize("value", ["1", '"true"', "null", "[]"])
def test_property_value_must_be_boolean(value: str) -> None:
    assert reply_for(f'{{"method":"SET_PROPERTY","params":["combined",{value}],"id":8}}') == (
        b'{"error":{"code":1,"msg":"Invalid value type: expected Boolean"},"id":8}')
    assert reply_for(b'{"method":"SET_PROPERTY","params":["combined"],"id":8}') == (
        b'{"error":{"code":1,"msg":"Invalid value type: expected Boolean"},"id":8}')


def test_params_not_array_for_other_methods() -> None:
    assert reply_for(b'{"method":"GET_PROPERTY","params":"combined","id":1}') == (
        b'{"error":{"code":2,"msg":"Invalid request: params must be an array"},"id":1}')


# --- encoders ----------------------------------------------------------------------------

def test_encode_error_escapes_the_message() -> None:
    assert encode_error(b'"q"', 2, 'bad "x"\n') == (
        b'{"error":{"code":2,"msg":"bad \\"x\\"\\n"},"id":"q"}')


def test_encoded_replies_parse_as_binance_shapes() -> None:
    """An independent parser sees exactly Binance's keys, in Binance's order."""
    ok = json.loads(encode_result(b"1", {"a": [1, 2]}))
    assert list(ok) == ["result", "id"] and ok == {"result": {"a": [1, 2]}, "id": 1}
    err = json.loads(encode_error(b"null", 3, "Invalid JSON"))
    assert list(err) == ["error", "id"] and list(err["error"]) == ["code", "msg"]


# --- the error tree and close codes the replies and closes come from ---------------------

def test_error_tree() -> None:
    from tickhub.errors import AuthError, ConfigError, TickhubError
    for cls in (ConfigError, AuthError, ProtocolError, InvalidStream):
        assert issubclass(cls, TickhubError)
    assert issubclass(InvalidStream, ProtocolError)
    assert str(AuthError(401, "missing token")) == "401 missing token"


def test_close_codes_values_and_reconnect_advice() -> None:
    from tickhub.errors import CloseCode
    assert {c.name: int(c) for c in CloseCode} == {
        "NORMAL": 1000, "GOING_AWAY": 1001, "PROTOCOL_ERROR": 1002, "UNSUPPORTED_DATA": 1003,
        "INVALID_PAYLOAD": 1007, "POLICY_VIOLATION": 1008, "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011, "TRY_AGAIN_LATER": 1013, "TOKEN_EXPIRED": 4001,
        "SLOW_CONSUMER": 4008, "PONG_TIMEOUT": 4010, "STREAM_GAP": 4011, "RATE_LIMITED": 4029}
    reconnect = {c.name for c in CloseCode if c.reconnect}
    assert reconnect == {"GOING_AWAY", "INTERNAL_ERROR", "TRY_AGAIN_LATER", "TOKEN_EXPIRED",
                         "SLOW_CONSUMER", "PONG_TIMEOUT", "STREAM_GAP", "RATE_LIMITED"}
    for code in CloseCode:
        # a close reason must fit the 125-byte control-frame payload with the 2-byte code
        assert 0 < len(code.description.encode()) <= 123
