# cython: language_level=3
"""Compiled twin of tickhub._ext.envelope_py: recognise upstream messages without a JSON decode.

One text message from an exchange combined-stream connection is classified by
:func:`parse` into ``(kind, key, start, end)``:

===============  ==========================================  =================================
kind             shape (keys in any order, any whitespace)   key / ``buf[start:end]``
===============  ==========================================  =================================
``KIND_DATA``    ``{"stream":<string>,"data":<value>}``      stream name, escapes decoded /
                                                             the ``data`` value as sent
``KIND_RESULT``  ``{"result":<value>,"id":<value>}``         raw ``id`` bytes / the result
``KIND_ERROR``   ``{"error":<object>,"id":<value>}``         raw ``id`` bytes / the error
``KIND_NONE``    anything else                               ``(0, None, 0, 0)``
===============  ==========================================  =================================

What counts as "anything else" (all give ``KIND_NONE``, never an exception):

* not valid JSON as orjson sees it: truncated, unbalanced, bad numbers or literals,
  trailing bytes other than whitespace, invalid UTF-8 anywhere, a ``\\u`` escape that is a
  lone surrogate, a control byte inside a string, a number that is infinite as a double,
  nesting deeper than 1024 (orjson's limit, the outer object included);
* a top-level key other than the two of its shape (extra keys, even ones Binance might add
  one day, are refused rather than guessed at: a message we do not fully understand is
  not forwarded as data);
* a repeated key (orjson keeps the last one silently; an envelope that says two things is
  refused);
* ``stream`` not a string, ``error`` not an object, a missing member.

The whole buffer is validated whenever the answer is not ``KIND_NONE``, so the property
is: on *every* input, ``parse`` returns a kind other than ``KIND_NONE`` exactly when
orjson accepts the buffer and it decodes to one of the three shapes (with unique keys).
Keys themselves may be spelled with escapes (``"\\u0073tream"``), as JSON allows.

:func:`event_id` gives the de-duplication id of one event payload (a ``data`` slice), by
event type: ``trade`` → ``t``, ``aggTrade`` → ``a``, ``depthUpdate`` → ``u``; without an
``e`` key: ``u`` (bookTicker), else ``lastUpdateId`` (partial depth), else ``E``; any
other ``e`` → ``E``. Only top-level keys count (a kline's nested ``k.t`` does not). The
chosen field must be a JSON integer in 0..2**63-1; otherwise, or when the field is
missing, the answer is -1 ("no usable id": forward without de-duplication). It reads
keys in order and stops as soon as the answer is decided, so the rest of the payload is
not validated (run :func:`parse` first, as the upstream reader does); what it does read
is validated, it never reads outside the buffer, and a repeated id-relevant key before
the decision gives -1.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memchr, memcmp

__all__ = ["KIND_NONE", "KIND_DATA", "KIND_RESULT", "KIND_ERROR", "parse", "event_id"]

ctypedef const unsigned char* cptr

cdef enum:
    # orjson refuses a document nested deeper than this (the outermost container is 1).
    DEPTH_LIMIT = 1024

    # Top-level envelope keys, as bits of a "seen" mask.
    KEY_STREAM = 1
    KEY_DATA = 2
    KEY_RESULT = 4
    KEY_ERROR = 8
    KEY_ID = 16

    # Event types and the top-level payload keys event_id looks at.
    EV_ABSENT = 0
    EV_TRADE = 1
    EV_AGG_TRADE = 2
    EV_DEPTH_UPDATE = 3
    EV_OTHER = 4
    F_TYPE = 1      # "e"
    F_TRADE = 2     # "t"
    F_AGG = 4       # "a"
    F_UPDATE = 8    # "u"
    F_LAST = 16     # "lastUpdateId"
    F_TIME = 32     # "E"

# The smallest decimal that rounds to infinity as a double: 2**1024 - 2**970, the midpoint
# between DBL_MAX and 2**1024 (a tie rounds to even, i.e. up). 309 digits.
cdef const char* INF_THRESHOLD = (
    b"17976931348623158079372897140530341507993413271003782693617377898044496829276475094"
    b"66490179775872070963302864166928879109465555478519404026306574886715058206819089020"
    b"00708383676273854845817711531764475730270069855571366959622842914819860834936475292"
    b"719074168444365510704342711559699508093042880177904174497792")
cdef enum:
    INF_THRESHOLD_DIGITS = 309

cdef tuple _NONE_RESULT = (KIND_NONE, None, 0, 0)


# ---------------------------------------------------------------------------- scanning

# 1 for the bytes a string body holds as themselves: printable ASCII but '"' and '\\'.
# One table load per byte instead of four comparisons: parse of the combined trade
# message went from 267 to 219 ns, the 20-level depthUpdate from 1.78 to 1.06 µs.
cdef unsigned char _PLAIN_STRING_BYTE[256]
cdef int _byte
for _byte in range(256):
    _PLAIN_STRING_BYTE[_byte] = 0x20 <= _byte < 0x80 and _byte != 0x22 and _byte != 0x5C
# Every scanner takes [p, end), returns the position just past what it read, or NULL
# when the input is not what it must be. None reads at or beyond `end`.

cdef inline cptr _skip_ws(cptr p, cptr end) noexcept nogil:
    while p < end and (p[0] == 0x20 or p[0] == 0x0A or p[0] == 0x0D or p[0] == 0x09):
        p += 1
    return p


cdef inline bint _is_digit(unsigned char c) noexcept nogil:
    return 0x30 <= c <= 0x39


cdef inline int _hex4(cptr p) noexcept nogil:
    """The value of the four hex digits at p (caller checked they exist), or -1."""
    cdef int value = 0, i, c
    for i in range(4):
        c = p[i]
        if 0x30 <= c <= 0x39:
            c -= 0x30
        elif 0x61 <= c <= 0x66:
            c -= 0x57
        elif 0x41 <= c <= 0x46:
            c -= 0x37
        else:
            return -1
        value = (value << 4) | c
    return value


cdef inline bint _is_continuation(unsigned char c) noexcept nogil:
    return (c & 0xC0) == 0x80


cdef cptr _skip_utf8(cptr p, cptr end) noexcept nogil:
    """One well-formed multi-byte UTF-8 sequence (p[0] >= 0x80): no overlong forms, no
    encoded surrogates, nothing above U+10FFFF — what orjson (and Python) accept."""
    cdef unsigned char c = p[0], c1
    cdef Py_ssize_t avail = end - p
    if 0xC2 <= c <= 0xDF:
        if avail < 2 or not _is_continuation(p[1]):
            return NULL
        return p + 2
    if 0xE0 <= c <= 0xEF:
        if avail < 3:
            return NULL
        c1 = p[1]
        if c == 0xE0:
            if not 0xA0 <= c1 <= 0xBF:
                return NULL
        elif c == 0xED:
            if not 0x80 <= c1 <= 0x9F:
                return NULL
        elif not _is_continuation(c1):
            return NULL
        if not _is_continuation(p[2]):
            return NULL
        return p + 3
    if 0xF0 <= c <= 0xF4:
        if avail < 4:
            return NULL
        c1 = p[1]
        if c == 0xF0:
            if not 0x90 <= c1 <= 0xBF:
                return NULL
        elif c == 0xF4:
            if not 0x80 <= c1 <= 0x8F:
                return NULL
        elif not _is_continuation(c1):
            return NULL
        if not _is_continuation(p[2]) or not _is_continuation(p[3]):
            return NULL
        return p + 4
    return NULL


cdef cptr _scan_string(cptr p, cptr end, bint* escaped) noexcept nogil:
    """A string body: p is just past the opening quote; returns just past the closing one.

    Sets ``escaped[0]`` when the body has a backslash escape (left alone otherwise).
    """
    cdef unsigned char c
    cdef int code
    while p < end:
        while p < end and _PLAIN_STRING_BYTE[p[0]]:
            p += 1
        if p >= end:
            return NULL
        c = p[0]
        if c == 0x22:
            return p + 1
        elif c == 0x5C:
            escaped[0] = True
            if end - p < 2:
                return NULL
            c = p[1]
            if c == 0x75:  # \uXXXX, surrogates only as a high+low pair
                if end - p < 6:
                    return NULL
                code = _hex4(p + 2)
                if code < 0:
                    return NULL
                p += 6
                if 0xD800 <= code <= 0xDBFF:
                    if end - p < 6 or p[0] != 0x5C or p[1] != 0x75:
                        return NULL
                    code = _hex4(p + 2)
                    if code < 0xDC00 or code > 0xDFFF:
                        return NULL
                    p += 6
                elif 0xDC00 <= code <= 0xDFFF:
                    return NULL
            elif (c == 0x22 or c == 0x5C or c == 0x2F or c == 0x62 or c == 0x66
                  or c == 0x6E or c == 0x72 or c == 0x74):
                p += 2
            else:
                return NULL
        elif c < 0x20:
            return NULL
        else:
            p = _skip_utf8(p, end)
            if p == NULL:
                return NULL
    return NULL


cdef bint _overflows(cptr int_start, cptr int_end, cptr frac_start, cptr frac_end,
                     long exponent) noexcept nogil:
    """True when the decimal int.frac * 10**exponent is infinite as a double.

    orjson refuses such numbers; only numbers in DBL_MAX's decade need a digit-by-digit
    comparison with the rounding threshold, and they are rare.
    """
    cdef cptr first, seg_end, next_seg = NULL, next_end = NULL
    cdef Py_ssize_t magnitude, i
    if int_end - int_start == 1 and int_start[0] == 0x30:
        if frac_start == NULL:
            return False
        first = frac_start
        while first < frac_end and first[0] == 0x30:
            first += 1
        if first == frac_end:
            return False  # zero, whatever the exponent
        magnitude = -(first - frac_start) - 1
        seg_end = frac_end
    else:
        first = int_start
        magnitude = int_end - int_start - 1
        seg_end = int_end
        next_seg = frac_start
        next_end = frac_end
    magnitude += exponent
    if magnitude != 308:
        return magnitude > 308
    i = 0
    while True:
        if i == INF_THRESHOLD_DIGITS:
            return True  # equal to the threshold so far; more digits only add
        if first == seg_end:
            if next_seg == NULL:
                return False  # shorter: the threshold's remaining digits are not all 0
            first = next_seg
            seg_end = next_end
            next_seg = NULL
            continue
        if first[0] != <unsigned char>INF_THRESHOLD[i]:
            return first[0] > <unsigned char>INF_THRESHOLD[i]
        first += 1
        i += 1


cdef cptr _scan_number(cptr p, cptr end) noexcept nogil:
    """-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, finite as a double."""
    cdef cptr int_start, int_end, frac_start = NULL, frac_end = NULL, exp_start
    cdef long exponent = 0
    cdef bint has_exponent = False, exponent_negative = False
    if p < end and p[0] == 0x2D:
        p += 1
    if p >= end:
        return NULL
    int_start = p
    if p[0] == 0x30:
        p += 1
    elif 0x31 <= p[0] <= 0x39:
        p += 1
        while p < end and _is_digit(p[0]):
            p += 1
    else:
        return NULL
    int_end = p
    if p < end and p[0] == 0x2E:
        p += 1
        frac_start = p
        while p < end and _is_digit(p[0]):
            p += 1
        if p == frac_start:
            return NULL
        frac_end = p
    if p < end and (p[0] == 0x65 or p[0] == 0x45):
        has_exponent = True
        p += 1
        if p < end and (p[0] == 0x2B or p[0] == 0x2D):
            exponent_negative = p[0] == 0x2D
            p += 1
        exp_start = p
        while p < end and _is_digit(p[0]):
            if exponent < 100000000:  # clamped: far past any finite double either way
                exponent = exponent * 10 + (p[0] - 0x30)
            p += 1
        if p == exp_start:
            return NULL
    if has_exponent or int_end - int_start > 308:
        if _overflows(int_start, int_end, frac_start, frac_end,
                      -exponent if exponent_negative else exponent):
            return NULL
    return p


cdef inline cptr _literal(cptr p, cptr end, const char* word, Py_ssize_t n) noexcept nogil:
    if end - p < n or memcmp(p, word, n) != 0:
        return NULL
    return p + n


cdef inline cptr _member_key(cptr p, cptr end) noexcept nogil:
    """``"key" :`` and the whitespace after it, inside an object being skipped."""
    cdef bint escaped = False
    if p >= end or p[0] != 0x22:
        return NULL
    p = _scan_string(p + 1, end, &escaped)
    if p == NULL:
        return NULL
    p = _skip_ws(p, end)
    if p >= end or p[0] != 0x3A:
        return NULL
    return _skip_ws(p + 1, end)


cdef cptr _skip_value(cptr p, cptr end, int depth) noexcept nogil:
    """Validate and skip one JSON value starting at p (no leading whitespace).

    ``depth`` is the number of containers already open around it. Iterative, with the
    open containers on a fixed stack, so hostile nesting cannot exhaust the C stack.
    """
    cdef unsigned char stack[DEPTH_LIMIT]  # 1 = object, 0 = array
    cdef int top = 0
    cdef bint escaped = False
    cdef unsigned char c, close
    while True:
        # A value starts at p.
        if p >= end:
            return NULL
        c = p[0]
        if c == 0x7B or c == 0x5B:
            if depth + top >= DEPTH_LIMIT:
                return NULL
            stack[top] = c == 0x7B
            top += 1
            p = _skip_ws(p + 1, end)
            if p >= end:
                return NULL
            if p[0] == (0x7D if c == 0x7B else 0x5D):
                p += 1
                top -= 1
            elif c == 0x7B:
                p = _member_key(p, end)
                if p == NULL:
                    return NULL
                continue
            else:
                continue
        elif c == 0x22:
            p = _scan_string(p + 1, end, &escaped)
        elif c == 0x2D or _is_digit(c):
            p = _scan_number(p, end)
        elif c == 0x74:
            p = _literal(p, end, b"true", 4)
        elif c == 0x66:
            p = _literal(p, end, b"false", 5)
        elif c == 0x6E:
            p = _literal(p, end, b"null", 4)
        else:
            return NULL
        if p == NULL:
            return NULL
        # After a value: close containers until one continues with a comma.
        while True:
            if top == 0:
                return p
            p = _skip_ws(p, end)
            if p >= end:
                return NULL
            c = p[0]
            close = 0x7D if stack[top - 1] else 0x5D
            if c == 0x2C:
                p = _skip_ws(p + 1, end)
                if stack[top - 1]:
                    p = _member_key(p, end)
                    if p == NULL:
                        return NULL
                break
            if c != close:
                return NULL
            p += 1
            top -= 1


# ---------------------------------------------------------------------------- strings

cdef inline Py_ssize_t _utf8_encode(unsigned int code, unsigned char* out) noexcept nogil:
    if code < 0x80:
        out[0] = <unsigned char>code
        return 1
    if code < 0x800:
        out[0] = <unsigned char>(0xC0 | (code >> 6))
        out[1] = <unsigned char>(0x80 | (code & 0x3F))
        return 2
    if code < 0x10000:
        out[0] = <unsigned char>(0xE0 | (code >> 12))
        out[1] = <unsigned char>(0x80 | ((code >> 6) & 0x3F))
        out[2] = <unsigned char>(0x80 | (code & 0x3F))
        return 3
    out[0] = <unsigned char>(0xF0 | (code >> 18))
    out[1] = <unsigned char>(0x80 | ((code >> 12) & 0x3F))
    out[2] = <unsigned char>(0x80 | ((code >> 6) & 0x3F))
    out[3] = <unsigned char>(0x80 | (code & 0x3F))
    return 4


cdef Py_ssize_t _unescape(cptr s, cptr e, unsigned char* out) noexcept nogil:
    """Decode a string body that ``_scan_string`` accepted into ``out`` (room: e - s).

    Never longer than the input: an escape is 2 to 12 bytes and decodes to 1 to 4.
    """
    cdef Py_ssize_t n = 0
    cdef unsigned int code, low
    cdef unsigned char c
    while s < e:
        c = s[0]
        if c != 0x5C:
            out[n] = c
            n += 1
            s += 1
            continue
        c = s[1]
        if c == 0x75:
            code = <unsigned int>_hex4(s + 2)
            s += 6
            if 0xD800 <= code <= 0xDBFF:
                low = <unsigned int>_hex4(s + 2)
                s += 6
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            n += _utf8_encode(code, out + n)
            continue
        if c == 0x62:
            c = 0x08
        elif c == 0x66:
            c = 0x0C
        elif c == 0x6E:
            c = 0x0A
        elif c == 0x72:
            c = 0x0D
        elif c == 0x74:
            c = 0x09
        out[n] = c  # \" \\ \/ stand for themselves
        n += 1
        s += 2
    return n


cdef inline bint _equals(cptr s, Py_ssize_t n, const char* word, Py_ssize_t word_len) noexcept nogil:
    return n == word_len and memcmp(s, word, n) == 0


cdef int _envelope_key(cptr s, cptr e, bint escaped) noexcept nogil:
    """Which envelope key the string body s..e names: a KEY_* bit, or 0 for any other."""
    # A character is at most 6 bytes when escaped (\uXXXX): the 6-letter keys fit in 36.
    cdef unsigned char decoded[40]
    cdef Py_ssize_t n = e - s
    if escaped:
        if n > 40:
            return 0
        n = _unescape(s, e, decoded)
        s = decoded
    if _equals(s, n, b"stream", 6):
        return KEY_STREAM
    if _equals(s, n, b"data", 4):
        return KEY_DATA
    if _equals(s, n, b"result", 6):
        return KEY_RESULT
    if _equals(s, n, b"error", 5):
        return KEY_ERROR
    if _equals(s, n, b"id", 2):
        return KEY_ID
    return 0


# ---------------------------------------------------------------------------- parse

cdef int parse_c(const char* buf, Py_ssize_t n, Py_ssize_t* key_start, Py_ssize_t* key_end,
                 Py_ssize_t* start, Py_ssize_t* end) noexcept nogil:
    cdef cptr base = <cptr>buf
    cdef cptr stop = base + n
    cdef cptr p, body, value
    cdef cptr name_start = NULL, name_end = NULL, id_start = NULL, id_end = NULL
    cdef cptr value_start = NULL, value_end = NULL
    cdef bint escaped
    cdef int key, seen = 0
    key_start[0] = key_end[0] = start[0] = end[0] = 0
    p = _skip_ws(base, stop)
    if p >= stop or p[0] != 0x7B:
        return KIND_NONE
    p = _skip_ws(p + 1, stop)
    while True:
        if p >= stop or p[0] != 0x22:
            return KIND_NONE
        body = p + 1
        escaped = False
        p = _scan_string(body, stop, &escaped)
        if p == NULL:
            return KIND_NONE
        key = _envelope_key(body, p - 1, escaped)
        if key == 0 or seen & key:
            return KIND_NONE  # unknown or repeated key: stop reading, the answer is NONE
        seen |= key
        if (seen & (KEY_STREAM | KEY_DATA)) and (seen & (KEY_RESULT | KEY_ERROR | KEY_ID)):
            return KIND_NONE
        if (seen & KEY_RESULT) and (seen & KEY_ERROR):
            return KIND_NONE
        p = _skip_ws(p, stop)
        if p >= stop or p[0] != 0x3A:
            return KIND_NONE
        p = _skip_ws(p + 1, stop)
        if p >= stop:
            return KIND_NONE
        value = p
        if key == KEY_STREAM:
            if p[0] != 0x22:
                return KIND_NONE
            p = _scan_string(p + 1, stop, &escaped)
            if p == NULL:
                return KIND_NONE
            name_start = value + 1
            name_end = p - 1
        else:
            if key == KEY_ERROR and p[0] != 0x7B:
                return KIND_NONE
            p = _skip_value(p, stop, 1)
            if p == NULL:
                return KIND_NONE
            if key == KEY_ID:
                id_start = value
                id_end = p
            else:
                value_start = value
                value_end = p
        p = _skip_ws(p, stop)
        if p >= stop:
            return KIND_NONE
        if p[0] == 0x2C:
            p = _skip_ws(p + 1, stop)
            continue
        if p[0] != 0x7D:
            return KIND_NONE
        break
    if _skip_ws(p + 1, stop) != stop:
        return KIND_NONE
    if seen == KEY_STREAM | KEY_DATA:
        key_start[0] = name_start - base
        key_end[0] = name_end - base
        start[0] = value_start - base
        end[0] = value_end - base
        return KIND_DATA
    if seen == KEY_RESULT | KEY_ID or seen == KEY_ERROR | KEY_ID:
        key_start[0] = id_start - base
        key_end[0] = id_end - base
        start[0] = value_start - base
        end[0] = value_end - base
        return KIND_RESULT if seen & KEY_RESULT else KIND_ERROR
    return KIND_NONE


cdef bytes key_bytes(const char* buf, Py_ssize_t key_start, Py_ssize_t key_end):
    cdef cptr s = <cptr>buf + key_start
    cdef Py_ssize_t n = key_end - key_start
    cdef bytes out
    if memchr(s, 0x5C, n) == NULL:
        return PyBytes_FromStringAndSize(<const char*>s, n)
    out = PyBytes_FromStringAndSize(NULL, n)  # decoded is never longer than raw
    n = _unescape(s, s + n, <unsigned char*>PyBytes_AS_STRING(out))
    return out[:n]


def parse(bytes buf not None) -> tuple:
    """Classify one upstream message: ``(kind, key, start, end)``; see the module doc."""
    cdef Py_ssize_t key_start, key_end, start, end
    cdef const char* data = PyBytes_AS_STRING(buf)
    cdef int kind = parse_c(data, PyBytes_GET_SIZE(buf), &key_start, &key_end, &start, &end)
    if kind == KIND_NONE:
        return _NONE_RESULT
    if kind == KIND_DATA:
        key = key_bytes(data, key_start, key_end)
    else:
        key = PyBytes_FromStringAndSize(data + key_start, key_end - key_start)
    return (kind, key, start, end)


# ---------------------------------------------------------------------------- event_id

cdef int _event_key(cptr s, cptr e, bint escaped) noexcept nogil:
    """Which id-relevant payload key the string body s..e names: an F_* bit, or 0."""
    cdef unsigned char decoded[72]  # "lastUpdateId" spelled with 12 \u escapes
    cdef Py_ssize_t n = e - s
    if escaped:
        if n > 72:
            return 0
        n = _unescape(s, e, decoded)
        s = decoded
    if n == 1:
        if s[0] == 0x65:
            return F_TYPE
        if s[0] == 0x74:
            return F_TRADE
        if s[0] == 0x61:
            return F_AGG
        if s[0] == 0x75:
            return F_UPDATE
        if s[0] == 0x45:
            return F_TIME
        return 0
    if _equals(s, n, b"lastUpdateId", 12):
        return F_LAST
    return 0


cdef int _event_type(cptr s, cptr e, bint escaped) noexcept nogil:
    cdef unsigned char decoded[72]  # "depthUpdate" spelled with 11 \u escapes
    cdef Py_ssize_t n = e - s
    if escaped:
        if n > 72:
            return EV_OTHER
        n = _unescape(s, e, decoded)
        s = decoded
    if _equals(s, n, b"trade", 5):
        return EV_TRADE
    if _equals(s, n, b"aggTrade", 8):
        return EV_AGG_TRADE
    if _equals(s, n, b"depthUpdate", 11):
        return EV_DEPTH_UPDATE
    return EV_OTHER


cdef long long _integer_id(cptr p, cptr end) noexcept nogil:
    """A validated JSON value p..end as an id: an integer in 0..2**63-1, else -1."""
    cdef unsigned long long value = 0
    cdef bint negative = p[0] == 0x2D
    if negative:
        p += 1
    if p >= end or not _is_digit(p[0]):
        return -1  # a string, object, array or literal
    # 19 digits always fit in 64 unsigned bits, and 2**63-1 has 19.
    if end - p > 19:
        return -1
    while p < end:
        if not _is_digit(p[0]):
            return -1  # a fraction or exponent: not an integer
        value = value * 10 + (p[0] - 0x30)
        p += 1
    if value > 9223372036854775807ULL or (negative and value != 0):
        return -1
    return <long long>value


cdef long long event_id_c(const char* buf, Py_ssize_t n) noexcept nogil:
    cdef cptr stop = <cptr>buf + n
    cdef cptr p, body, value
    cdef bint escaped
    cdef int key, seen = 0, event_type = EV_ABSENT
    cdef long long trade_id = -1, agg_id = -1, update_id = -1, last_update_id = -1
    cdef long long event_time = -1, number
    p = _skip_ws(<cptr>buf, stop)
    if p >= stop or p[0] != 0x7B:
        return -1
    p = _skip_ws(p + 1, stop)
    if p < stop and p[0] == 0x7D:
        return -1
    while True:
        if p >= stop or p[0] != 0x22:
            return -1
        body = p + 1
        escaped = False
        p = _scan_string(body, stop, &escaped)
        if p == NULL:
            return -1
        key = _event_key(body, p - 1, escaped)
        if seen & key:
            return -1
        seen |= key
        p = _skip_ws(p, stop)
        if p >= stop or p[0] != 0x3A:
            return -1
        p = _skip_ws(p + 1, stop)
        if p >= stop:
            return -1
        value = p
        if key == F_TYPE and p[0] == 0x22:
            escaped = False
            p = _scan_string(p + 1, stop, &escaped)
            if p == NULL:
                return -1
            event_type = _event_type(value + 1, p - 1, escaped)
        else:
            p = _skip_value(p, stop, 1)
            if p == NULL:
                return -1
            if key == F_TYPE:
                event_type = EV_OTHER  # "e" that is not a string names no known type
            elif key != 0:
                number = _integer_id(value, p)
                if key == F_TRADE:
                    trade_id = number
                elif key == F_AGG:
                    agg_id = number
                elif key == F_UPDATE:
                    update_id = number
                elif key == F_LAST:
                    last_update_id = number
                else:
                    event_time = number
        # Binance puts "e" first and the id right after: stop as soon as it is decided.
        if event_type == EV_TRADE and seen & F_TRADE:
            return trade_id
        if event_type == EV_AGG_TRADE and seen & F_AGG:
            return agg_id
        if event_type == EV_DEPTH_UPDATE and seen & F_UPDATE:
            return update_id
        if event_type == EV_OTHER and seen & F_TIME:
            return event_time
        p = _skip_ws(p, stop)
        if p >= stop:
            return -1
        if p[0] == 0x2C:
            p = _skip_ws(p + 1, stop)
            continue
        if p[0] != 0x7D:
            return -1
        break
    if event_type != EV_ABSENT:
        return -1  # a known type without its id field, or another type without "E"
    if seen & F_UPDATE:
        return update_id
    if seen & F_LAST:
        return last_update_id
    return event_time


def event_id(bytes payload not None) -> int:
    """The de-duplication id of one event payload, or -1; see the module doc."""
    return event_id_c(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
