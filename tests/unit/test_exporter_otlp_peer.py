#!/usr/bin/python3
"""Upstream servers that nobody in this project wrote, for tests/unit/test_exporter_otlp.c.

Runs, on ephemeral ports of 127.0.0.1:
  https       OTLP/HTTP over TLS (Python's ssl + http.server, HTTP/1.1)
  https_mtls  the same, requiring a client certificate signed by CLIENT_CA
  grpc        OTLP/gRPC in plaintext (grpcio: h2c with prior knowledge)
  grpcs       OTLP/gRPC over TLS (grpcio: ALPN h2)

Every successful export is answered with an Export*ServiceResponse whose partial_success
carries rejected = the length of the request message after decompression and
error_message = "<crc32 of the message>|<x-tenant header or metadata>", so the C test can
check that the exact bytes and headers arrived without any other channel.

gRPC metadata "x-scenario" picks a failure: "exhausted" answers RESOURCE_EXHAUSTED with a
google.rpc.RetryInfo of 1.25 s in grpc-status-details-bin (as grpcio-status would build it);
"unavailable" answers UNAVAILABLE with a non-ASCII message (percent-encoded by grpcio).

Usage: test_exporter_otlp_peer.py CERT KEY CLIENT_CA
Prints one JSON line with the ports, then serves until stdin reaches EOF.
"""
import gzip
import http.server
import json
import ssl
import sys
import threading
import zlib


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def field_len(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def partial_success(message, tenant):
    inner = field_varint(1, len(message)) + field_len(
        2, ("%08x|%s" % (zlib.crc32(message) & 0xFFFFFFFF, tenant)).encode())
    return field_len(1, inner)


def retry_info_status(seconds, nanos):
    duration = field_varint(1, seconds) + field_varint(2, nanos)
    any_msg = field_len(1, b"type.googleapis.com/google.rpc.RetryInfo") + field_len(
        2, field_len(1, duration))
    return field_varint(1, 8) + field_len(2, b"slow down") + field_len(3, any_msg)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        if self.headers.get("Content-Encoding", "") == "gzip":
            body = gzip.decompress(body)
        if self.path not in ("/v1/traces", "/v1/metrics", "/v1/logs"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        out = partial_success(body, self.headers.get("X-Tenant", ""))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def https_server(cert, key, client_ca):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def grpc_servers(cert, key):
    try:
        import grpc
    except ImportError:
        return None, None
    from concurrent import futures

    def export(request, context):
        md = dict(context.invocation_metadata())
        scenario = md.get("x-scenario", "")
        if scenario == "exhausted":
            context.abort_with_status(_Status(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down",
                (("grpc-status-details-bin", retry_info_status(1, 250000000)),)))
        if scenario == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "try later \u2713 100%")
        return partial_success(request, md.get("x-tenant", ""))

    class _Status(grpc.Status):
        def __init__(self, code, details, trailing_metadata):
            self.code = code
            self.details = details
            self.trailing_metadata = trailing_metadata

    handlers = []
    for sig, svc in (("trace", "TraceService"), ("metrics", "MetricsService"),
                     ("logs", "LogsService")):
        handlers.append(grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.%s.v1.%s" % (sig, svc),
            {"Export": grpc.unary_unary_rpc_method_handler(export)}))
    ports = []
    creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
    for tls in (False, True):
        srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        srv.add_generic_rpc_handlers(handlers)
        if tls:
            ports.append(srv.add_secure_port("127.0.0.1:0", creds))
        else:
            ports.append(srv.add_insecure_port("127.0.0.1:0"))
        srv.start()
        # Keep a reference: a collected server stops serving.
        grpc_servers.keep.append(srv)
    return ports[0], ports[1]


grpc_servers.keep = []


def main():
    cert, key, client_ca = sys.argv[1:4]
    ports = {
        "https": https_server(cert, key, None),
        "https_mtls": https_server(cert, key, client_ca),
    }
    ports["grpc"], ports["grpcs"] = grpc_servers(cert, key)
    print(json.dumps(ports), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
