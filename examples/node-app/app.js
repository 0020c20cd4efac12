#!/usr/bin/env node
// A small web app instrumented with the OpenTelemetry JS SDK. It exports OTLP/HTTP (protobuf) to
// the local dlotel agent, at the SDK's default address (http://localhost:4318) unless
// OTEL_EXPORTER_OTLP_ENDPOINT says otherwise. Start the agent first (README.md).
//
//   node app.js                 serve on $PORT (default 3000): GET /work?items=N
//   node app.js --once N        serve on a free port, make N requests to itself, flush, exit;
//                               prints {"traceIds": [...]} so a test can look for them upstream
'use strict';

const http = require('http');
const api = require('@opentelemetry/api');
const { SeverityNumber } = require('@opentelemetry/api-logs');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { TracerProvider, BatchSpanProcessor, StackContextManager } = require('@opentelemetry/sdk-trace');
const { MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics');
const { LoggerProvider, BatchLogRecordProcessor } = require('@opentelemetry/sdk-logs');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { OTLPMetricExporter } = require('@opentelemetry/exporter-metrics-otlp-proto');
const { OTLPLogExporter } = require('@opentelemetry/exporter-logs-otlp-proto');

const endpoint = (process.env.OTEL_EXPORTER_OTLP_ENDPOINT || 'http://localhost:4318').replace(/\/+$/, '');
const resource = resourceFromAttributes({
    'service.name': process.env.OTEL_SERVICE_NAME || 'dlotel-example-node',
    'service.version': '0.1.0',
});

// ---- the SDK: traces, metrics and logs, all to the agent ----
api.context.setGlobalContextManager(new StackContextManager().enable());
const tracerProvider = new TracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }) })],
});
const meterProvider = new MeterProvider({
    resource,
    readers: [new PeriodicExportingMetricReader({
        exporter: new OTLPMetricExporter({ url: `${endpoint}/v1/metrics` }),
        exportIntervalMillis: 10000,
    })],
});
const loggerProvider = new LoggerProvider({
    resource,
    processors: [new BatchLogRecordProcessor({ exporter: new OTLPLogExporter({ url: `${endpoint}/v1/logs` }) })],
});
api.trace.setGlobalTracerProvider(tracerProvider);

const tracer = tracerProvider.getTracer('dlotel-example-node', '0.1.0');
const meter = meterProvider.getMeter('dlotel-example-node', '0.1.0');
const logger = loggerProvider.getLogger('dlotel-example-node', '0.1.0');

const requests = meter.createCounter('app.requests', { unit: '{request}', description: 'Requests served.' });
// Explicit buckets, chosen for this app's latencies rather than the SDK's defaults.
const latency = meter.createHistogram('app.request.duration', {
    unit: 'ms',
    description: 'Time to serve a request.',
    advice: { explicitBucketBoundaries: [1, 5, 10, 25, 50, 100, 250, 500, 1000] },
});

// ---- the app ----
function handle(req, res) {
    const started = Date.now();
    const url = new URL(req.url, 'http://localhost');
    tracer.startActiveSpan(`${req.method} ${url.pathname}`, { kind: api.SpanKind.SERVER }, (span) => {
        const items = Math.min(Number(url.searchParams.get('items') || 3), 1000);
        span.setAttribute('http.request.method', req.method);
        span.setAttribute('url.path', url.pathname);
        span.setAttribute('app.items', items);
        tracer.startActiveSpan('compute', (child) => {
            let sum = 0;
            for (let i = 0; i < items * 1000; i++) sum += i % 7;
            child.setAttribute('app.sum', sum);
            child.end();
        });
        const status = url.pathname === '/work' ? 200 : 404;
        span.setAttribute('http.response.status_code', status);
        if (status !== 200) span.setStatus({ code: api.SpanStatusCode.ERROR, message: 'not found' });
        // Emitted while the span is active: the record carries its trace and span ids.
        logger.emit({
            severityNumber: status === 200 ? SeverityNumber.INFO : SeverityNumber.WARN,
            severityText: status === 200 ? 'INFO' : 'WARN',
            body: `served ${url.pathname} with ${items} items`,
            attributes: { 'url.path': url.pathname, 'http.response.status_code': status },
        });
        const attrs = { 'http.route': url.pathname, 'http.response.status_code': status };
        requests.add(1, attrs);
        latency.record(Date.now() - started, attrs);
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ traceId: span.spanContext().traceId, items }));
        span.end();
    });
}

async function shutdown() {
    await tracerProvider.forceFlush();
    await loggerProvider.forceFlush();
    await meterProvider.forceFlush();
    await Promise.all([tracerProvider.shutdown(), loggerProvider.shutdown(), meterProvider.shutdown()]);
}

function get(port, path) {
    return new Promise((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path }, (res) => {
            let body = '';
            res.on('data', (c) => { body += c; });
            res.on('end', () => resolve(JSON.parse(body)));
        }).on('error', reject);
    });
}

async function once(n) {
    const server = http.createServer(handle);
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = server.address().port;
    const traceIds = [];
    for (let i = 0; i < n; i++) traceIds.push((await get(port, `/work?items=${i + 1}`)).traceId);
    server.close();
    await shutdown();
    process.stdout.write(`${JSON.stringify({ traceIds, endpoint })}\n`);
}

const onceAt = process.argv.indexOf('--once');
if (onceAt >= 0) {
    once(Number(process.argv[onceAt + 1] || 3)).catch((e) => {
        process.stderr.write(`app.js: ${e.stack || e}\n`);
        process.exit(1);
    });
} else {
    const port = Number(process.env.PORT || 3000);
    const server = http.createServer(handle).listen(port, () => {
        process.stdout.write(`listening on http://localhost:${port}/work, exporting to ${endpoint}\n`);
    });
    const stop = () => server.close(() => shutdown().then(() => process.exit(0)));
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
}
