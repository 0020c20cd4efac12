"""Forwarding through outages and restarts (issue 3): nothing the agent acknowledged is lost.

- A 60-second upstream outage under a steady sender (1000 spans/s and 100 log records/s), with
  the configuration a new user gets (only DATALAYER_RUN_URL and DATALAYER_API_KEY, default
  retry and disk queue): every span and log record arrives, by id, in order.
- A stop (SIGTERM, drain cut short by shutdown_timeout) and a crash (SIGKILL) with a non-empty
  disk queue: a restart delivers everything that was acknowledged. Duplicates are allowed
  (at-least-once) and counted; the counts are printed and written next to the test's files.
"""

import collections
import http.client
import json
import os
import threading
import time

import pytest

import fwdlib
import itlib
import upstreams

OUTAGE_SECONDS = float(os.environ.get("DLOTEL_IT_OUTAGE_SECONDS", "60"))


@pytest.fixture
def cleanup():
    things = []
    yield things
    for t in reversed(things):
        if isinstance(t, itlib.Agent):
            if t.alive():
                t.stop()
        else:
            t.close()


class Sender(threading.Thread):
    """Sends numbered spans (|spans_per_s|, in requests of 100) and log records (|logs_per_s|,
    in requests of 100) to the agent's OTLP/HTTP receiver at a steady rate, and remembers which
    numbers were acknowledged (200)."""

    def __init__(self, port, spans_per_s=1000, logs_per_s=100):
        super().__init__(daemon=True)
        self.port = port
        self.spans_per_s = spans_per_s
        self.logs_per_s = logs_per_s
        self.stop_event = threading.Event()
        self.acked = {"traces": [], "logs": []}
        self.errors = []
        self.next = {"traces": 1, "logs": 1}
        self.worst_latency = 0.0

    def post(self, conn, signal_name, body):
        t0 = time.monotonic()
        conn.request("POST", f"/v1/{signal_name}", body=body,
                     headers={"Content-Type": "application/x-protobuf"})
        r = conn.getresponse()
        r.read()
        self.worst_latency = max(self.worst_latency, time.monotonic() - t0)
        return r.status

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        t0 = time.monotonic()
        sent_spans = sent_logs = 0
        try:
            while not self.stop_event.is_set():
                elapsed = time.monotonic() - t0
                for sig, rate, sent in (("traces", self.spans_per_s, sent_spans),
                                        ("logs", self.logs_per_s, sent_logs)):
                    if rate and sent + 100 <= elapsed * rate + 100:
                        first = self.next[sig]
                        body = (fwdlib.numbered_spans(first, 100) if sig == "traces"
                                else fwdlib.numbered_logs(first, 100))
                        try:
                            status = self.post(conn, sig, body)
                        except (OSError, http.client.HTTPException) as e:
                            self.errors.append(f"{sig} {first}: {e!r}")
                            conn.close()
                            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                            continue
                        if status == 200:
                            self.acked[sig].extend(range(first, first + 100))
                        else:
                            self.errors.append(f"{sig} {first}: HTTP {status}")
                        self.next[sig] = first + 100
                        if sig == "traces":
                            sent_spans += 100
                        else:
                            sent_logs += 100
                time.sleep(0.01)
        finally:
            conn.close()

    def stop(self):
        self.stop_event.set()
        self.join(timeout=30)


def report(tmp_path, name, data):
    """Prints the numbers a reviewer wants (duplicates...) and keeps them next to the test."""
    print(f"{name}: {json.dumps(data)}")
    (tmp_path / f"{name}.json").write_text(json.dumps(data, indent=1))


def duplicates(seqs):
    c = collections.Counter(seqs)
    return sum(n - 1 for n in c.values() if n > 1)


def test_60s_outage_loses_nothing(tmp_path, cleanup):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in upstreams.env_without_datalayer().items()
           if not k.startswith("XDG_")}
    env.update({"HOME": str(home), "DATALAYER_RUN_URL": up.url(),
                "DATALAYER_API_KEY": "outage-key"})
    agent = fwdlib.FwdAgent(tmp_path / "agent", [], env=env)
    os.makedirs(agent.workdir)
    cleanup.append(agent)
    agent.start()

    sender = Sender(agent.http_port)
    sender.start()
    try:
        up.wait(lambda u: len(u.delivered("traces")) >= 2, timeout=15, what="first deliveries")
        up.down()
        t_down = time.monotonic()
        # Unplugged: the sender keeps going; the agent keeps answering 200 from its disk queue.
        while time.monotonic() - t_down < OUTAGE_SECONDS:
            time.sleep(1)
            agent.assert_alive()
            assert not sender.errors, sender.errors[:5]
        during = {
            "disk_items": agent.metric("dlotel_exporter_disk_items", exporter="datalayer"),
            "retried_batches": agent.metric("dlotel_exporter_retried_batches_total",
                                            exporter="datalayer"),
        }
        assert during["disk_items"] > 0.5 * OUTAGE_SECONDS * 1000, during
        assert agent.healthz()["status"] == "degraded"
        up.up()
        t_up = time.monotonic()
        time.sleep(2)
    finally:
        sender.stop()
    assert not sender.errors, sender.errors[:5]
    acked = sender.acked
    assert len(acked["traces"]) >= (OUTAGE_SECONDS + 2) * 900, len(acked["traces"])

    # Default retry: at most max_interval (30s) + 50% jitter before the next attempt.
    def all_there(u):
        return all(set(acked[s]) <= set(fwdlib.delivered_seqs(u, s)) for s in acked)

    up.wait(all_there, timeout=120, what="every acknowledged span and log record")
    recovered = time.monotonic() - t_up
    stats = {"outage_s": OUTAGE_SECONDS, "recovery_s": round(recovered, 1),
             "acked_spans": len(acked["traces"]), "acked_logs": len(acked["logs"]),
             "worst_receiver_latency_s": round(sender.worst_latency, 3), **during}
    for s in acked:
        got = fwdlib.delivered_seqs(up, s)
        stats[f"duplicate_{s}"] = duplicates(got)
        stats[f"reordering_{s}"] = fwdlib.assert_in_order(up, s)
    report(tmp_path, "outage", stats)
    for r in up.delivered():
        assert r.path == f"/api/otel/v1/otlp/v1/{r.signal}"
        assert r.headers.get("authorization") == "Bearer outage-key"
    assert sender.worst_latency < 2.0, "the receiver held a client while the upstream was down"
    agent.wait_metric("dlotel_exporter_disk_items", lambda v: v == 0, exporter="datalayer")
    assert agent.metric("dlotel_exporter_dropped_items_total", exporter="datalayer") == 0
    agent.wait_health("ok")


def send_numbered(agent, first_req, n_req, per_req=100):
    """Sends requests of numbered spans and logs; returns the acknowledged numbers."""
    acked = {"traces": [], "logs": []}
    for i in range(first_req, first_req + n_req):
        first = 1 + i * per_req
        for sig, body in (("traces", fwdlib.numbered_spans(first, per_req)),
                          ("logs", fwdlib.numbered_logs(first, per_req))):
            status, _, _ = fwdlib.http_post(agent.http_port, sig, body)
            assert status == 200
            acked[sig].extend(range(first, first + per_req))
    return acked


def test_sigterm_with_a_disk_backlog_then_restart(tmp_path, cleanup):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    up.down()
    args = fwdlib.exporter_sets("up", "otlp_http", up.url()) + ["--shutdown-timeout", "500ms"]
    agent = fwdlib.FwdAgent(tmp_path, args)
    cleanup.append(agent)
    agent.start()
    acked = send_numbered(agent, 0, 50)
    agent.wait_metric("dlotel_exporter_retried_batches_total", lambda v: v >= 1, exporter="up")
    # Read into batches that wait for their retry, and still in the segment files.
    assert agent.metric("dlotel_exporter_in_flight_batches", exporter="up") >= 1
    assert agent.metric("dlotel_exporter_disk_bytes", exporter="up") > 0
    t0 = time.monotonic()
    agent.stop()  # exit 0, clean log
    assert time.monotonic() - t0 < 3
    assert "stay on disk for the next start" in itlib.tail(agent.log_path)

    up.up()
    agent2 = fwdlib.FwdAgent(tmp_path, args)
    cleanup.append(agent2)
    agent2.start()
    up.wait(lambda u: all(set(acked[s]) <= set(fwdlib.delivered_seqs(u, s)) for s in acked),
            timeout=30, what="the backlog after the restart")
    stats = {s: {"acked": len(acked[s]), "duplicates": duplicates(fwdlib.delivered_seqs(up, s))}
             for s in acked}
    report(tmp_path, "sigterm_restart", stats)
    # Nothing was delivered before the stop, so nothing may come twice.
    assert all(v["duplicates"] == 0 for v in stats.values()), stats
    for s in acked:
        fwdlib.assert_in_order(up, s)


@pytest.mark.parametrize("fsync", ["batch", "always"])
def test_sigkill_with_a_disk_backlog_then_restart(tmp_path, cleanup, fsync):
    """Delivered for a while, then the upstream goes down and more is acknowledged into the disk
    queue, then kill -9. After a restart every acknowledged item arrives; batches delivered but
    not yet committed when the process died may come twice (counted, reported)."""
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    args = fwdlib.exporter_sets("up", "otlp_http", up.url(),
                                extra=[f"disk_queue.fsync={fsync}"]) + ["--batch-timeout", "20ms"]
    agent = fwdlib.FwdAgent(tmp_path, args)
    cleanup.append(agent)
    agent.start()
    acked = send_numbered(agent, 0, 30)
    up.wait(lambda u: len(fwdlib.delivered_seqs(u, "traces")) >= 1000, timeout=15,
            what="deliveries before the outage")
    up.down()
    more = send_numbered(agent, 30, 30)
    for s in acked:
        acked[s] += more[s]
    agent.wait_metric("dlotel_exporter_retried_batches_total", lambda v: v >= 1, exporter="up")
    assert agent.metric("dlotel_exporter_disk_bytes", exporter="up") > 0
    agent.sigkill()
    assert agent.returncode == -9

    up.up()
    agent2 = fwdlib.FwdAgent(tmp_path, args)
    cleanup.append(agent2)
    agent2.start()
    up.wait(lambda u: all(set(acked[s]) <= set(fwdlib.delivered_seqs(u, s)) for s in acked),
            timeout=30, what="everything acknowledged, after kill -9 and restart")
    stats = {s: {"acked": len(acked[s]),
                 "delivered": len(fwdlib.delivered_seqs(up, s)),
                 "duplicates": duplicates(fwdlib.delivered_seqs(up, s))} for s in acked}
    report(tmp_path, f"sigkill_restart_{fsync}", stats)
    for s in acked:
        assert set(fwdlib.delivered_seqs(up, s)) == set(acked[s]), s


def test_sigterm_under_load_loses_nothing_acknowledged(tmp_path, cleanup):
    """Four clients keep sending while SIGTERM arrives (disk queue with fsync=always, so answers
    wait for the group fdatasync): every request is either answered 200 and then delivered, or
    its connection is closed before an answer (the client retries); none gets an error status."""
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    args = fwdlib.exporter_sets("up", "otlp_http", up.url(),
                                extra=["disk_queue.fsync=always"]) + ["--batch-timeout", "20ms"]
    agent = fwdlib.FwdAgent(tmp_path, args)
    cleanup.append(agent)
    agent.start()
    acked, statuses, errors = [], collections.Counter(), []
    lock = threading.Lock()
    stop = threading.Event()

    def client(k):
        first = 1 + k * 10_000_000
        conn = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)
        while not stop.is_set():
            body = fwdlib.numbered_spans(first, 20)
            try:
                conn.request("POST", "/v1/traces", body=body,
                             headers={"Content-Type": "application/x-protobuf"})
                r = conn.getresponse()
                r.read()
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(repr(e))
                return
            with lock:
                statuses[r.status] += 1
                if r.status == 200:
                    acked.extend(range(first, first + 20))
            first += 20

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    agent.stop()  # exit 0, clean log
    stop.set()
    for t in threads:
        t.join(timeout=15)
    assert set(statuses) == {200}, statuses
    assert len(acked) > 1000, len(acked)

    agent2 = fwdlib.FwdAgent(tmp_path, args)
    cleanup.append(agent2)
    agent2.start()
    up.wait(lambda u: set(acked) <= set(fwdlib.delivered_seqs(u, "traces")), timeout=30,
            what="every acknowledged span")
    got = fwdlib.delivered_seqs(up, "traces")
    report(tmp_path, "sigterm_under_load", {"acked": len(acked), "statuses": dict(statuses),
                                            "connection_errors": len(errors),
                                            "delivered": len(got), "duplicates": duplicates(got)})
