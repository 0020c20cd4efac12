"""HTTP/2 frames by hand, for the hostile-input tests: what no well-behaved client library will
send (rapid resets, SETTINGS and PING floods, CONTINUATION floods, more streams than allowed,
bodies that never end). Debian's python3 has no h2 package, and a real client would refuse to
misbehave, so the frames are written here byte by byte (RFC 9113) and the server's answers are
read at the frame level: frame types, stream ids, error codes. Statuses are read only where the
server sends them as a static-table index or a plain literal; otherwise tests use curl.
"""

import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, \
    ENHANCE_YOUR_CALM = range(12)


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream & 0x7FFFFFFF) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s):
    if isinstance(s, str):
        s = s.encode("latin-1")
    return hpack_int(len(s), 7) + s


def header_block(path="/v1/traces", content_type="application/x-protobuf", extra=(),
                 method="POST"):
    """An HPACK block with literal fields only (never indexed, no Huffman): easy to get right."""
    out = bytearray()
    fields = [(":method", method), (":scheme", "http"), (":path", path),
              (":authority", "127.0.0.1")]
    if content_type is not None:
        fields.append(("content-type", content_type))
    fields += list(extra)
    for name, value in fields:
        out += b"\x00" + hpack_str(name) + hpack_str(value)
    return bytes(out)


# Huffman codes (RFC 7541 appendix B) of the characters a :status value holds.
_HUFF_DIGITS = {"00000": "0", "00001": "1", "00010": "2", "011001": "3", "011010": "4",
                "011011": "5", "011100": "6", "011101": "7", "011110": "8", "011111": "9"}
_STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}


def _read_int(buf, i, prefix_bits):
    limit = (1 << prefix_bits) - 1
    v = buf[i] & limit
    i += 1
    if v < limit:
        return v, i
    shift = 0
    while True:
        b = buf[i]
        i += 1
        v += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def status_of(block, dyn):
    """The :status of a response header block, or None. |dyn| is the connection's list of
    dynamic-table :status values (newest first), kept across blocks: the only entries this
    reader tracks, so it gives up (None) on a block that indexes anything else."""
    i = 0
    status = None
    while i < len(block):
        b = block[i]
        if b & 0x80:  # Indexed field.
            idx, i = _read_int(block, i, 7)
            if idx in _STATIC_STATUS:
                status = _STATIC_STATUS[idx]
            elif idx > 61 and idx - 62 < len(dyn) and dyn[idx - 62] is not None:
                status = dyn[idx - 62]
            elif idx > 61 and idx - 62 < len(dyn):
                pass
            continue
        if b & 0xE0 == 0x20:  # Dynamic table size update.
            _, i = _read_int(block, i, 5)
            continue
        incremental = b & 0xC0 == 0x40
        idx, i = _read_int(block, i, 6 if incremental else 4)
        name = None
        if idx == 0:
            huff = block[i] & 0x80
            n, i = _read_int(block, i, 7)
            name = block[i:i + n] if not huff else b"?"
            i += n
        huff = block[i] & 0x80
        n, i = _read_int(block, i, 7)
        raw = block[i:i + n]
        i += n
        if huff:
            bits = "".join(f"{x:08b}" for x in raw)
            text, cur = "", ""
            for bit in bits:
                cur += bit
                if cur in _HUFF_DIGITS:
                    text += _HUFF_DIGITS[cur]
                    cur = ""
            value = text
        else:
            value = raw.decode("latin-1")
        is_status = idx in _STATIC_STATUS or idx == 8 or name == b":status"
        if is_status and value.isdigit():
            status = int(value)
        if incremental:
            dyn.insert(0, int(value) if is_status and value.isdigit() else None)
    return status


class H2Conn:
    """A raw HTTP/2 client connection: sends frames, reads frames, tracks nothing it does not
    have to."""

    def __init__(self, port, timeout=10.0, settings=()):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.dyn = []
        self.eof = False
        payload = b"".join(struct.pack(">HI", k, v) for k, v in settings)
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, payload))

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def request(self, stream, body, path="/v1/traces", end=True, **kw):
        """HEADERS then DATA (in 16 KiB frames); END_STREAM on the last unless |end| is false."""
        out = bytearray(frame(HEADERS, END_HEADERS | (END_STREAM if not body and end else 0),
                              stream, header_block(path, **kw)))
        for off in range(0, len(body), 16384):
            chunk = body[off:off + 16384]
            last = off + 16384 >= len(body)
            out += frame(DATA, END_STREAM if last and end else 0, stream, chunk)
        self.send(bytes(out))

    def read_frame(self, timeout=None):
        """(type, flags, stream, payload), or None at EOF / reset / timeout."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
                d = self.sock.recv(1 << 20)
                if not d:
                    self.eof = True
                    return None
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            self.eof = True
            return None
        except socket.timeout:
            return None
        n = int.from_bytes(self.buf[:3], "big")
        ftype, flags = self.buf[3], self.buf[4]
        stream = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
        payload = self.buf[9:9 + n]
        self.buf = self.buf[9 + n:]
        return ftype, flags, stream, payload

    def frames_until(self, pred, timeout=10.0):
        """Reads frames until pred(frame) or EOF/deadline; returns (all frames, matched frame)."""
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = self.read_frame(timeout=max(0.05, deadline - time.monotonic()))
            if f is None:
                if self.eof:
                    break
                continue
            got.append(f)
            if f[0] == SETTINGS and not f[1] & ACK:
                self.send(frame(SETTINGS, ACK, 0))
            if pred(f):
                return got, f
        return got, None

    def response(self, stream, timeout=10.0):
        """Reads until |stream| ends. Returns (status or None, body, rst error code or None,
        all frames read)."""
        status, body, rst = None, b"", None
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = self.read_frame(timeout=max(0.05, deadline - time.monotonic()))
            if f is None:
                if self.eof:
                    break
                continue
            got.append(f)
            ftype, flags, sid, payload = f
            if ftype == SETTINGS and not flags & ACK:
                self.send(frame(SETTINGS, ACK, 0))
            if sid != stream:
                if ftype == HEADERS:
                    status_of(payload, self.dyn)  # Keep the dynamic table in step.
                continue
            if ftype == HEADERS:
                s = status_of(payload, self.dyn)
                if s is not None and status is None:
                    status = s
            elif ftype == DATA:
                body += payload
                if payload:
                    self.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(payload))))
            elif ftype == RST_STREAM:
                rst = struct.unpack(">I", payload)[0]
                break
            if flags & END_STREAM:
                break
        return status, body, rst, got


def goaway_code(frames):
    for ftype, flags, sid, payload in frames:
        if ftype == GOAWAY and len(payload) >= 8:
            return struct.unpack(">I", payload[4:8])[0]
    return None
