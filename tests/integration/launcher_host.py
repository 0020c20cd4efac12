"""A host application for test_launcher.py: a Python process that embeds dlotel the way an
application does (`import dlotel; dlotel.start()`), then obeys commands so that a test can drive
several such processes at once.

    python3 launcher_host.py [OPTIONS_JSON]

OPTIONS_JSON is passed to dlotel.start(**options). The first line on stdout is the result of
start(): {"ok": true, "pid": <daemon>, "spawned": ..., ...} or {"ok": false, "type": <exception
class>, "code": ..., "message": ...}. Then each line on stdin is a command, {"op": ...}, answered
by one line on stdout. The library's log lines go to stderr through `logging`.
"""

import json
import logging
import os
import socket
import sys
import time

import dlotel


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def error(e):
    return {"ok": False, "type": type(e).__name__, "code": getattr(e, "code", None),
            "message": str(e)}


def started(a):
    return {"ok": True, "pid": a.pid, "spawned": a.spawned, "enabled": a.enabled,
            "grpc_port": a.grpc_port, "http_port": a.http_port, "self": os.getpid()}


def children():
    """This process's children, from /proc (every thread's list)."""
    kids = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return sorted(set(kids))


def send_span(port, name, trace_id):
    """POSTs one span as OTLP/JSON to the agent, as an SDK exporter would."""
    now = time.time_ns()
    body = json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name",
                                     "value": {"stringValue": "launcher-host"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": "00f067aa0ba902b7", "name": name, "kind": 1,
            "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000)}]}]}]}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" +
              body)
    resp = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        resp += d
    s.close()
    return int(resp.split(b" ", 2)[1])


def main():
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                        format="host %(process)d %(levelname)s %(name)s: %(message)s")
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    try:
        a = dlotel.start(**options)
        out(started(a))
    except dlotel.DlotelError as e:
        out(error(e))
        return
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "status":
                out({"ok": True, "status": dlotel.status()})
            elif op == "flush":
                dlotel.flush(cmd.get("timeout", 10))
                out({"ok": True})
            elif op == "stop":
                dlotel.stop(daemon=cmd.get("daemon", False))
                out({"ok": True})
            elif op == "start":
                out(started(dlotel.start(**options)))
            elif op == "children":
                out({"ok": True, "children": children()})
            elif op == "send":
                out({"ok": True, "http": send_span(dlotel.agent().http_port, cmd["name"],
                                                   cmd["trace_id"])})
            elif op == "fork":
                # A child inherits the parent's attachment; it must attach on its own.
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(r)
                    try:
                        res = {"inherited_agent": dlotel.agent() is not None}
                        b = dlotel.start(**options)
                        res.update(started(b))
                        res["users"] = dlotel.status()["users"]
                        b.stop()
                    except Exception as e:  # noqa: BLE001 - reported to the parent
                        res = error(e)
                    os.write(w, json.dumps(res).encode())
                    os._exit(0)
                os.close(w)
                data = b""
                while True:
                    d = os.read(r, 65536)
                    if not d:
                        break
                    data += d
                os.waitpid(pid, 0)
                out({"ok": True, "child": json.loads(data)})
            elif op == "exit":
                out({"ok": True})
                return
            else:
                out({"ok": False, "message": f"unknown op {op}"})
        except dlotel.DlotelError as e:
            out(error(e))


if __name__ == "__main__":
    main()
