"""A small web app that embeds the dlotel agent and is instrumented with the OpenTelemetry SDK.

    pip install ./python opentelemetry-sdk opentelemetry-exporter-otlp
    export DATALAYER_RUN_URL=https://prod1.datalayer.run DATALAYER_API_KEY=...
    python3 examples/python-app/app.py              # http://localhost:8000/work?items=5

`dlotel.start()` starts the agent daemon (or attaches to the one already running for this user)
and returns once it listens; the SDK then exports to it over OTLP/HTTP. Every request makes a
server span with a child span, counts itself, records its latency in a histogram with explicit
buckets, and logs a line that carries the request's trace and span ids.

`python3 app.py --once N` serves on a free port, makes N requests to itself, flushes the SDK and
the agent, prints the trace ids as JSON and exits (for tests and a quick look).

Without the OpenTelemetry SDK installed the app still runs, so that the agent's path can be seen
working: it then posts one OTLP/JSON span per request itself (a stand-in, not instrumentation).
"""

import argparse
import http.server
import json
import logging
import os
import random
import secrets
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import dlotel
except ImportError:  # Running from a checkout without `pip install ./python`.
    sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
    import dlotel

log = logging.getLogger("example")
SERVICE = os.environ.get("OTEL_SERVICE_NAME", "dlotel-example-python")
BUCKETS = [1, 5, 10, 25, 50, 100, 250, 500, 1000]  # milliseconds


class Telemetry:
    """The OpenTelemetry SDK, exporting everything to the agent at |endpoint|."""

    def __init__(self, endpoint):
        from opentelemetry import metrics, trace
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": SERVICE, "service.version": "0.1.0"})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
        trace.set_tracer_provider(self.tracer_provider)

        # The histogram's buckets, fixed by a view rather than left to the SDK's defaults.
        self.meter_provider = MeterProvider(
            resource=resource,
            metric_readers=[PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"),
                export_interval_millis=10000)],
            views=[View(instrument_name="app.request.duration",
                        aggregation=ExplicitBucketHistogramAggregation(boundaries=BUCKETS))])
        metrics.set_meter_provider(self.meter_provider)

        # Python logging -> OTLP logs; records emitted inside a span carry its trace context.
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")))
        set_logger_provider(self.logger_provider)
        logging.getLogger().addHandler(LoggingHandler(logger_provider=self.logger_provider))

        self.trace = trace
        self.tracer = trace.get_tracer("dlotel-example-python", "0.1.0")
        meter = metrics.get_meter("dlotel-example-python", "0.1.0")
        self.requests = meter.create_counter("app.requests", unit="{request}",
                                             description="Requests served.")
        self.latency = meter.create_histogram("app.request.duration", unit="ms",
                                              description="Time to serve a request.")

    def request(self, method, path, work):
        """Runs |work| (returns (status, items)) inside a server span; returns (status, trace id)."""
        started = time.monotonic()
        with self.tracer.start_as_current_span(f"{method} {path}",
                                               kind=self.trace.SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.path", path)
            with self.tracer.start_as_current_span("compute"):
                status, items = work()
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("app.items", items)
            if status != 200:
                span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, "not found"))
            # Inside the span: the handler attaches trace_id and span_id to the log record.
            log.info("served %s with %d items", path, items)
            attrs = {"http.route": path, "http.response.status_code": status}
            self.requests.add(1, attrs)
            self.latency.record((time.monotonic() - started) * 1000.0, attrs)
            return status, format(span.get_span_context().trace_id, "032x")

    def flush(self):
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()
        self.logger_provider.force_flush()

    def shutdown(self):
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()


class RawTelemetry:
    """Stand-in when the OpenTelemetry SDK is not installed: one OTLP/JSON span per request,
    posted to the agent by hand, so that the agent's path is visible. Install the SDK for real
    instrumentation."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        log.warning("the OpenTelemetry SDK is not installed (pip install opentelemetry-sdk "
                    "opentelemetry-exporter-otlp); posting minimal OTLP/JSON spans instead")

    def request(self, method, path, work):
        start = time.time_ns()
        status, items = work()
        trace_id = secrets.token_hex(16)
        span = {"traceId": trace_id, "spanId": secrets.token_hex(8), "name": f"{method} {path}",
                "kind": 2, "startTimeUnixNano": str(start), "endTimeUnixNano": str(time.time_ns()),
                "attributes": [{"key": "app.items", "value": {"intValue": str(items)}},
                               {"key": "http.response.status_code",
                                "value": {"intValue": str(status)}}]}
        body = {"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": SERVICE}}]},
            "scopeSpans": [{"scope": {"name": "dlotel-example-python"}, "spans": [span]}]}]}
        req = urllib.request.Request(f"{self.endpoint}/v1/traces", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
        log.info("served %s with %d items (trace %s)", path, items, trace_id)
        return status, trace_id

    def flush(self):
        pass

    def shutdown(self):
        pass


def make_handler(telemetry):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path, _, query = self.path.partition("?")
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)

            def work():
                items = min(int(params.get("items", "3") or 3), 1000)
                for _ in range(items * 1000):  # Some work to measure.
                    random.random()
                return (200 if path == "/work" else 404), items

            status, trace_id = telemetry.request("GET", path, work)
            body = json.dumps({"traceId": trace_id}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # The span and the log record say it already.
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--once", type=int, metavar="N",
                        help="make N requests to itself, flush, print the trace ids and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")

    agent = dlotel.start()  # Raises dlotel.DlotelError with the daemon's own message.
    # The SDK's default endpoint is the agent's default port; follow the agent if it listens
    # elsewhere (DATALAYER_OTEL_AGENT_HTTP_ENDPOINT), unless the SDK is told otherwise.
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or agent.http_endpoint or \
        "http://localhost:4318"
    endpoint = endpoint.rstrip("/")
    log.info("dlotel %s: daemon pid %s, exporting to %s", dlotel.version(), agent.pid, endpoint)
    try:
        telemetry = Telemetry(endpoint)
    except ImportError:
        telemetry = RawTelemetry(endpoint)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0 if args.once else args.port),
                                             make_handler(telemetry))
    if args.once:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        trace_ids = []
        for i in range(args.once):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/work?items={i + 1}",
                                        timeout=10) as resp:
                trace_ids.append(json.load(resp)["traceId"])
        server.shutdown()
        telemetry.flush()
        dlotel.flush(timeout=10)  # The agent sends on what it holds before we report.
        telemetry.shutdown()
        print(json.dumps({"traceIds": trace_ids, "status": dlotel.status()}))
        return 0
    log.info("serving on http://localhost:%d/work", args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    telemetry.flush()
    telemetry.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
