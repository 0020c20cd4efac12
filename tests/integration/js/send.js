#!/usr/bin/env node
// A small "user application" instrumented with the OpenTelemetry JS SDK (3.x) and its OTLP
// exporters, pointed at a dlotel agent. It emits a known set of traces, metrics and logs, flushes,
// shuts down, and prints a JSON manifest of exactly what it sent, so that a test can check that
// every item arrived intact at the agent's file exporter.
//
//   node send.js --protocol grpc|http/protobuf|http/json --endpoint URL --run-id ID
//                [--compression none|gzip] [--timeout-ms N]
//
// URL is the agent's base address: http://127.0.0.1:4317 for gRPC, http://127.0.0.1:4318 for
// HTTP (the script appends /v1/traces, /v1/metrics, /v1/logs as the exporters' docs say).
//
// The SDK swallows export errors by default (it logs through `diag`, which is silent unless set).
// So every exporter is wrapped to record each export's result, `diag` errors are captured, and the
// number of items each exporter reported as exported is compared with what was emitted. Any
// failure makes the script exit 1, with the reasons on stderr.
'use strict';

const api = require('@opentelemetry/api');
const { ExportResultCode } = require('@opentelemetry/core');
const { defaultResource, resourceFromAttributes } = require('@opentelemetry/resources');
const {
    TracerProvider, BatchSpanProcessor, StackContextManager,
} = require('@opentelemetry/sdk-trace');
const { LoggerProvider, BatchLogRecordProcessor } = require('@opentelemetry/sdk-logs');
const { MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics');
const { SeverityNumber } = require('@opentelemetry/api-logs');

// ---------- command line ----------
function parseArgs(argv) {
    const opts = { protocol: null, endpoint: null, runId: null, compression: 'none', timeoutMs: 10000 };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) usage(`${a} needs a value`);
            return argv[++i];
        };
        if (a === '--protocol') opts.protocol = next();
        else if (a === '--endpoint') opts.endpoint = next().replace(/\/+$/, '');
        else if (a === '--run-id') opts.runId = next();
        else if (a === '--compression') opts.compression = next();
        else if (a === '--timeout-ms') opts.timeoutMs = Number(next());
        else usage(`unknown argument ${a}`);
    }
    if (!['grpc', 'http/protobuf', 'http/json'].includes(opts.protocol)) usage('--protocol must be grpc, http/protobuf or http/json');
    if (!opts.endpoint) usage('--endpoint is required');
    if (!opts.runId) usage('--run-id is required');
    if (!['none', 'gzip'].includes(opts.compression)) usage('--compression must be none or gzip');
    if (!(opts.timeoutMs > 0)) usage('--timeout-ms must be a positive number');
    return opts;
}

function usage(msg) {
    process.stderr.write(`send.js: ${msg}\n` +
        'usage: node send.js --protocol grpc|http/protobuf|http/json --endpoint URL --run-id ID ' +
        '[--compression none|gzip] [--timeout-ms N]\n');
    process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));

// ---------- failure tracking ----------
const failures = [];
const exported = { spans: 0, logs: 0, metricExports: 0 };

api.diag.setLogger({
    error: (...args) => failures.push(`diag error: ${args.map(String).join(' ')}`),
    warn: (...args) => process.stderr.write(`send.js: diag warn: ${args.map(String).join(' ')}\n`),
    info: () => {}, debug: () => {}, verbose: () => {},
}, api.DiagLogLevel.WARN);

// Wraps exporter.export so that each result is checked and counted. The SDK calls export with a
// result callback; a result other than SUCCESS is a failure the test must see.
function watch(exporter, signal, count) {
    const orig = exporter.export.bind(exporter);
    exporter.export = (items, resultCallback) => orig(items, (result) => {
        if (result.code === ExportResultCode.SUCCESS) {
            exported[signal] += count(items);
        } else {
            const why = result.error ? (result.error.stack || String(result.error)) : 'no error given';
            failures.push(`${signal} export failed: ${why}`);
        }
        resultCallback(result);
    });
    return exporter;
}

// ---------- exporters for the chosen protocol ----------
function makeExporters() {
    const common = { timeoutMillis: opts.timeoutMs };
    if (opts.compression === 'gzip') common.compression = 'gzip';
    const base = opts.endpoint;
    let mods;
    let urls;
    if (opts.protocol === 'grpc') {
        mods = ['@opentelemetry/exporter-trace-otlp-grpc', '@opentelemetry/exporter-metrics-otlp-grpc',
            '@opentelemetry/exporter-logs-otlp-grpc'];
        urls = [base, base, base];
    } else {
        const suffix = opts.protocol === 'http/json' ? 'http' : 'proto';
        mods = [`@opentelemetry/exporter-trace-otlp-${suffix}`, `@opentelemetry/exporter-metrics-otlp-${suffix}`,
            `@opentelemetry/exporter-logs-otlp-${suffix}`];
        urls = [`${base}/v1/traces`, `${base}/v1/metrics`, `${base}/v1/logs`];
    }
    const { OTLPTraceExporter } = require(mods[0]);
    const { OTLPMetricExporter } = require(mods[1]);
    const { OTLPLogExporter } = require(mods[2]);
    return {
        traces: watch(new OTLPTraceExporter({ ...common, url: urls[0] }), 'spans', (s) => s.length),
        metrics: watch(new OTLPMetricExporter({ ...common, url: urls[1] }), 'metricExports', () => 1),
        logs: watch(new OTLPLogExporter({ ...common, url: urls[2] }), 'logs', (l) => l.length),
    };
}

// ---------- time ----------
// Explicit timestamps let the manifest state exactly what the agent must store. HrTime is
// [seconds, nanoseconds]; the manifest carries nanoseconds since the epoch as decimal strings
// (OTLP/JSON's int64 form) so nothing is lost to doubles.
const T0_SEC = Math.floor(Date.now() / 1000) - 60;
function hr(offsetMs, extraNanos = 0) {
    const totalNs = BigInt(T0_SEC) * 1000000000n + BigInt(offsetMs) * 1000000n + BigInt(extraNanos);
    return { hr: [Number(totalNs / 1000000000n), Number(totalNs % 1000000000n)], ns: totalNs.toString() };
}

// ---------- the application ----------
const SERVICE = 'dlotel-it-send';
const resourceAttrs = {
    'service.name': SERVICE,
    'service.version': '1.2.3',
    'deployment.environment.name': 'integration-test',
    'dlotel.test.run_id': opts.runId,
    'dlotel.test.protocol': opts.protocol,
};
const resource = defaultResource().merge(resourceFromAttributes(resourceAttrs));
const SCOPE = { name: 'dlotel-it-app', version: '0.9.1' };

// The API's SpanKind starts at INTERNAL = 0; OTLP's enum has SPAN_KIND_UNSPECIFIED = 0 first, so
// the wire value is the API value plus one. The manifest holds the wire value.
const KIND_NAMES = ['INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];
const otlpKind = (apiKind) => apiKind + 1;

// Attributes of every type OTLP has. Integers past 2^31 check that int64 survives (as strings in
// OTLP/JSON); 2.5 stays a double because the SDK maps integral numbers to intValue.
function richAttributes(i) {
    return {
        'test.string': `value-${i}`,
        'test.string.unicode': 'grüße 🚀 "quoted" \\ back\nslash',
        'test.string.empty': '',
        'test.int': 42 + i,
        'test.int.negative': -7 - i,
        'test.int.big': 1234567890123 + i,
        'test.double': 2.5 + i,
        'test.double.negative': -0.125,
        'test.bool.true': true,
        'test.bool.false': false,
        'test.array.string': ['a', 'b', `c${i}`],
        'test.array.int': [1, 2, 3 + i],
        'test.array.double': [1.5, 2.25, -3.75],
        'test.array.bool': [true, false, true],
    };
}

function attrManifest(attrs) {
    const out = {};
    for (const [k, v] of Object.entries(attrs)) out[k] = typedValue(v);
    return out;
}

// The type the SDK's OTLP serializer gives a JS value (otlp-transformer's toAnyValue).
function typedValue(v) {
    if (typeof v === 'string') return { type: 'string', value: v };
    if (typeof v === 'boolean') return { type: 'bool', value: v };
    if (typeof v === 'number') {
        return Number.isInteger(v) ? { type: 'int', value: String(v) } : { type: 'double', value: v };
    }
    if (Array.isArray(v)) return { type: 'array', value: v.map(typedValue) };
    if (v && typeof v === 'object') {
        const kv = {};
        for (const [k, x] of Object.entries(v)) kv[k] = typedValue(x);
        return { type: 'kvlist', value: kv };
    }
    throw new Error(`no OTLP type for ${v}`);
}

function emitTraces(tracer, manifest) {
    // Three traces. Trace k: SERVER root -> INTERNAL child -> CLIENT grandchild, plus a PRODUCER
    // child; trace 2's root has a CONSUMER child that links to trace 0's producer span, and its
    // client span ends with an error status.
    const spans = manifest.spans;
    const record = (span, name, kind, attrs, start, end, parent, extra = {}) => {
        const sc = span.spanContext();
        spans.push({
            name, kind: otlpKind(kind), kindName: KIND_NAMES[kind], traceId: sc.traceId, spanId: sc.spanId,
            parentSpanId: parent ? parent.spanContext().spanId : '',
            startTimeUnixNano: start.ns, endTimeUnixNano: end.ns,
            attributes: attrManifest(attrs),
            events: extra.events || [], links: extra.links || [],
            status: extra.status || { code: 0, message: '' },
        });
    };
    let producer0 = null;
    let offset = 0;
    for (let k = 0; k < 3; k++) {
        const base = offset;
        offset += 100;
        const rootAttrs = { ...richAttributes(k), 'http.request.method': 'GET', 'http.route': `/api/item/${k}` };
        const rs = hr(base, 123 + k), re = hr(base + 90, 456);
        const root = tracer.startSpan(`GET /api/item/${k}`, { kind: api.SpanKind.SERVER, attributes: rootAttrs, startTime: rs.hr });
        const rootEvents = [];
        const ev = hr(base + 1, 789);
        const evAttrs = { 'event.int': 7, 'event.string': `received-${k}`, 'event.bool': true, 'event.double': 0.5 };
        root.addEvent('request.received', evAttrs, ev.hr);
        rootEvents.push({ name: 'request.received', timeUnixNano: ev.ns, attributes: attrManifest(evAttrs) });
        const rootCtx = api.trace.setSpan(api.ROOT_CONTEXT, root);

        const is = hr(base + 5), ie = hr(base + 60);
        const inAttrs = { 'code.function.name': `handle${k}`, 'app.items': k + 1 };
        const internal = tracer.startSpan('handle request', { kind: api.SpanKind.INTERNAL, attributes: inAttrs, startTime: is.hr }, rootCtx);
        const inCtx = api.trace.setSpan(rootCtx, internal);

        const cs = hr(base + 10), ce = hr(base + 50);
        const clAttrs = { 'db.system.name': 'postgresql', 'db.query.text': `SELECT * FROM items WHERE id = ${k}`, 'server.port': 5432 };
        const client = tracer.startSpan('SELECT items', { kind: api.SpanKind.CLIENT, attributes: clAttrs, startTime: cs.hr }, inCtx);
        const clExtra = {};
        if (k === 2) {
            const xe = hr(base + 49);
            const exAttrs = { 'exception.type': 'DatabaseError', 'exception.message': 'connection reset by peer' };
            client.addEvent('exception', exAttrs, xe.hr);
            client.setStatus({ code: api.SpanStatusCode.ERROR, message: 'connection reset by peer' });
            clExtra.events = [{ name: 'exception', timeUnixNano: xe.ns, attributes: attrManifest(exAttrs) }];
            clExtra.status = { code: 2, message: 'connection reset by peer' };
        }
        client.end(ce.hr);
        record(client, 'SELECT items', api.SpanKind.CLIENT, clAttrs, cs, ce, internal, clExtra);

        const ps = hr(base + 61), pe = hr(base + 62);
        const prAttrs = { 'messaging.system': 'kafka', 'messaging.destination.name': 'items.viewed' };
        const producer = tracer.startSpan('send items.viewed', { kind: api.SpanKind.PRODUCER, attributes: prAttrs, startTime: ps.hr }, rootCtx);
        producer.end(pe.hr);
        record(producer, 'send items.viewed', api.SpanKind.PRODUCER, prAttrs, ps, pe, root);
        if (k === 0) producer0 = producer;

        internal.setStatus({ code: api.SpanStatusCode.OK });
        internal.end(ie.hr);
        record(internal, 'handle request', api.SpanKind.INTERNAL, inAttrs, is, ie, root, { status: { code: 1, message: '' } });

        if (k === 2) {
            // A consumer span that links to the producer span of trace 0, as a message consumer would.
            const us = hr(base + 70), ue = hr(base + 80);
            const coAttrs = { 'messaging.system': 'kafka', 'messaging.operation.type': 'process' };
            const linkAttrs = { 'link.reason': 'message', 'link.index': 0 };
            const consumer = tracer.startSpan('process items.viewed', {
                kind: api.SpanKind.CONSUMER, attributes: coAttrs, startTime: us.hr,
                links: [{ context: producer0.spanContext(), attributes: linkAttrs }],
            }, rootCtx);
            consumer.end(ue.hr);
            const p0 = producer0.spanContext();
            record(consumer, 'process items.viewed', api.SpanKind.CONSUMER, coAttrs, us, ue, root, {
                links: [{ traceId: p0.traceId, spanId: p0.spanId, attributes: attrManifest(linkAttrs) }],
            });
        }
        root.end(re.hr);
        record(root, `GET /api/item/${k}`, api.SpanKind.SERVER, rootAttrs, rs, re, null, { events: rootEvents });
        manifest.traceIds.push(root.spanContext().traceId);
    }
}

function emitLogs(tracer, logger, manifest) {
    const logs = manifest.logs;
    const emit = (rec, spanCtx) => {
        logger.emit(rec);
        logs.push({
            body: typedValue(rec.body), severityNumber: rec.severityNumber, severityText: rec.severityText,
            timeUnixNano: rec._ts.ns, attributes: attrManifest(rec.attributes),
            traceId: spanCtx ? spanCtx.traceId : '', spanId: spanCtx ? spanCtx.spanId : '',
        });
    };
    const mk = (i, sevNum, sevText, body, attrs) => {
        const ts = hr(1000 + i, 17);
        return { timestamp: ts.hr, _ts: ts, severityNumber: sevNum, severityText: sevText, body, attributes: attrs };
    };
    // Logs emitted while a span is active carry its trace and span id: the SDK reads the active
    // context, as it does in a real request handler.
    tracer.startActiveSpan('log-emitting request', { kind: api.SpanKind.SERVER, startTime: hr(990).hr }, (span) => {
        const sc = span.spanContext();
        emit(mk(0, SeverityNumber.INFO, 'INFO', 'request started', { 'log.index': 0, 'http.route': '/api/logs' }), sc);
        emit(mk(1, SeverityNumber.WARN, 'WARN', 'slow query: 812 ms', { 'log.index': 1, 'db.duration_ms': 812.5, 'slow': true }), sc);
        emit(mk(2, SeverityNumber.ERROR, 'ERROR', 'payment declined', { 'log.index': 2, 'error.codes': ['E1', 'E2'] }), sc);
        const es = hr(1050);
        span.end(es.hr);
        manifest.spans.push({
            name: 'log-emitting request', kind: otlpKind(api.SpanKind.SERVER), kindName: 'SERVER', traceId: sc.traceId, spanId: sc.spanId,
            parentSpanId: '', startTimeUnixNano: hr(990).ns, endTimeUnixNano: es.ns, attributes: {}, events: [], links: [],
            status: { code: 0, message: '' },
        });
        manifest.traceIds.push(sc.traceId);
    });
    // And some outside any span: no trace context, a structured body, and the extreme severities.
    emit(mk(3, SeverityNumber.DEBUG, 'DEBUG', 'cache warmed', { 'log.index': 3, 'cache.entries': 1024 }), null);
    emit(mk(4, SeverityNumber.FATAL, 'FATAL', { event: 'shutdown', reason: 'disk full', free_bytes: 0 }, { 'log.index': 4 }), null);
    emit(mk(5, SeverityNumber.TRACE, 'TRACE', 'grüße, "quotes" and \\ and \n newline', { 'log.index': 5 }), null);
}

function emitMetrics(meter, manifest) {
    const m = manifest.metrics;
    const counter = meter.createCounter('dlotel.test.requests', { unit: '{request}', description: 'Requests handled.' });
    counter.add(3, { 'http.route': '/a' });
    counter.add(4, { 'http.route': '/a' });
    counter.add(5, { 'http.route': '/b' });
    m.push({ name: 'dlotel.test.requests', type: 'sum', monotonic: true, unit: '{request}', description: 'Requests handled.',
        points: [{ attributes: { 'http.route': typedValue('/a') }, value: 7 }, { attributes: { 'http.route': typedValue('/b') }, value: 5 }] });

    const updown = meter.createUpDownCounter('dlotel.test.active', { unit: '{connection}' });
    updown.add(5, { pool: 'main' });
    updown.add(-2, { pool: 'main' });
    updown.add(-1, { pool: 'spare' });
    m.push({ name: 'dlotel.test.active', type: 'sum', monotonic: false, unit: '{connection}',
        points: [{ attributes: { pool: typedValue('main') }, value: 3 }, { attributes: { pool: typedValue('spare') }, value: -1 }] });

    const bounds = [10, 50, 100, 500];
    const hist = meter.createHistogram('dlotel.test.latency', { unit: 'ms', advice: { explicitBucketBoundaries: bounds } });
    const values = [5, 20, 20, 75, 300, 1000, 10, 50.5];
    for (const v of values) hist.record(v, { 'http.route': '/a' });
    // Buckets are (-inf,10], (10,50], (50,100], (100,500], (500,+inf).
    const counts = [0, 0, 0, 0, 0];
    for (const v of values) {
        let b = bounds.findIndex((x) => v <= x);
        if (b < 0) b = bounds.length;
        counts[b]++;
    }
    m.push({ name: 'dlotel.test.latency', type: 'histogram', unit: 'ms', points: [{
        attributes: { 'http.route': typedValue('/a') }, count: values.length, sum: values.reduce((a, b) => a + b, 0),
        min: Math.min(...values), max: Math.max(...values), explicitBounds: bounds, bucketCounts: counts }] });

    const gauge = meter.createObservableGauge('dlotel.test.temperature', { unit: 'Cel' });
    gauge.addCallback((r) => {
        r.observe(21.5, { room: 'kitchen' });
        r.observe(-3.25, { room: 'freezer' });
    });
    m.push({ name: 'dlotel.test.temperature', type: 'gauge', unit: 'Cel',
        points: [{ attributes: { room: typedValue('kitchen') }, value: 21.5 }, { attributes: { room: typedValue('freezer') }, value: -3.25 }] });
}

async function main() {
    api.context.setGlobalContextManager(new StackContextManager().enable());
    const ex = makeExporters();
    // Batch processors, as production apps use; the short delay keeps the test quick, and the
    // forceFlush below sends whatever is left.
    const tracerProvider = new TracerProvider({ resource, spanProcessors: [new BatchSpanProcessor({ exporter: ex.traces, scheduledDelayMillis: 200 })] });
    const loggerProvider = new LoggerProvider({ resource, processors: [new BatchLogRecordProcessor({ exporter: ex.logs, scheduledDelayMillis: 200 })] });
    const reader = new PeriodicExportingMetricReader({ exporter: ex.metrics, exportIntervalMillis: 600000, exportTimeoutMillis: opts.timeoutMs });
    const meterProvider = new MeterProvider({ resource, readers: [reader] });
    api.trace.setGlobalTracerProvider(tracerProvider);

    const tracer = tracerProvider.getTracer(SCOPE.name, SCOPE.version);
    const logger = loggerProvider.getLogger(SCOPE.name, SCOPE.version);
    const meter = meterProvider.getMeter(SCOPE.name, SCOPE.version);

    const manifest = {
        runId: opts.runId, protocol: opts.protocol, compression: opts.compression,
        resource: attrManifest(resourceAttrs), scope: SCOPE,
        traceIds: [], spans: [], logs: [], metrics: [],
    };
    emitTraces(tracer, manifest);
    emitLogs(tracer, logger, manifest);
    emitMetrics(meter, manifest);

    const step = async (what, fn) => {
        try {
            await fn();
        } catch (e) {
            failures.push(`${what}: ${e && e.stack ? e.stack : e}`);
        }
    };
    await step('tracerProvider.forceFlush', () => tracerProvider.forceFlush());
    await step('loggerProvider.forceFlush', () => loggerProvider.forceFlush());
    await step('meterProvider.forceFlush', () => meterProvider.forceFlush());
    await step('tracerProvider.shutdown', () => tracerProvider.shutdown());
    await step('loggerProvider.shutdown', () => loggerProvider.shutdown());
    await step('meterProvider.shutdown', () => meterProvider.shutdown());

    manifest.exported = { ...exported };
    if (exported.spans !== manifest.spans.length) {
        failures.push(`exporters reported ${exported.spans} spans exported, the app made ${manifest.spans.length}`);
    }
    if (exported.logs !== manifest.logs.length) {
        failures.push(`exporters reported ${exported.logs} log records exported, the app made ${manifest.logs.length}`);
    }
    if (exported.metricExports < 1) failures.push('no metrics export succeeded');

    process.stdout.write(JSON.stringify(manifest, null, 1) + '\n');
    if (failures.length) {
        for (const f of failures) process.stderr.write(`send.js: FAILED: ${f}\n`);
        process.exitCode = 1;
    }
}

main().catch((e) => {
    process.stderr.write(`send.js: ${e && e.stack ? e.stack : e}\n`);
    process.exitCode = 1;
}).finally(() => {
    // gRPC channels may keep the event loop alive for a while after shutdown; leave promptly.
    setTimeout(() => process.exit(process.exitCode || 0), 100).unref();
});
