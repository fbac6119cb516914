// Package tracing holds kustomer-sync's OpenTelemetry traces: the tracer
// provider built from the standard OTEL_* environment variables (off unless
// one of them asks for traces), the W3C Trace Context propagator over NATS
// headers and HTTP requests, which reads a publisher's traceparent strictly
// (it is untrusted input: a malformed or oversized one is ignored), and
// helpers the worker, the ingest endpoint and the Kustomer client use to
// make spans only when tracing is on.
//
// Span attributes never carry personal data: no email, phone or name of a
// lead, no Kustomer request path that holds one (see [Transport]).
package tracing
