# cython: language_level=3
"""C-level face of tickhub._ext.frames, for other Cython modules (``cimport``).

The header writers are ``inline`` and defined here, so a module that does
``from tickhub._ext.frames cimport write_header, header_size`` compiles them into its
own loop: no Python call and no function pointer per frame.
"""

cpdef enum:
    OP_TEXT = 1
    OP_BINARY = 2

cdef enum:
    # Largest RFC 6455 server header: 2 bytes + 64-bit extended length, no mask.
    MAX_HEADER_SIZE = 10


cdef inline Py_ssize_t header_size(Py_ssize_t payload_len) noexcept nogil:
    """Bytes of the unmasked header for a payload of ``payload_len`` (>= 0): 2, 4 or 10."""
    if payload_len < 126:
        return 2
    if payload_len <= 0xFFFF:
        return 4
    return 10


cdef inline Py_ssize_t write_header(unsigned char* out, Py_ssize_t payload_len,
                                    int opcode) noexcept nogil:
    """Write a FIN, unmasked header at ``out`` and return its size (2, 4 or 10).

    Contract (not checked here, the callers check once at the Python boundary):
    ``payload_len >= 0``, ``opcode`` is a 4-bit opcode, and ``out`` has room for
    ``header_size(payload_len)`` bytes.
    """
    cdef unsigned long long n = <unsigned long long>payload_len
    cdef int i
    out[0] = <unsigned char>(0x80 | (opcode & 0x0F))
    if payload_len < 126:
        out[1] = <unsigned char>n
        return 2
    if payload_len <= 0xFFFF:
        out[1] = 126
        out[2] = <unsigned char>(n >> 8)
        out[3] = <unsigned char>(n & 0xFF)
        return 4
    out[1] = 127
    for i in range(8):
        out[9 - i] = <unsigned char>(n & 0xFF)
        n >>= 8
    return 10


cdef bytes frame_from_ptr(const char* payload, Py_ssize_t payload_len, int opcode)
cdef bytes combined_frame_from_ptr(const char* prefix, Py_ssize_t prefix_len,
                                   const char* data, Py_ssize_t data_len, int opcode)
