// Package ingest reads lead events from JSON, JSON lines or CSV and publishes
// them to JetStream with a de-duplication id, so the same input published
// twice stores each event once (within the stream's duplicate window).
//
// A [Reader] turns an input into [Event] values, naming the input and line in
// its errors; a [Publisher] sends them with a bounded window of asynchronous
// publishes and counts an event only once JetStream acknowledged it. The
// `publish` command and HTTP ingest both use them.
//
// A [Handler] is HTTP ingest: POST /v1/events/{workflow} as application/json
// with a bearer token and an optional HMAC signature of the body, answered
// 202 with the stream sequences only once JetStream stored every event of the
// request. A browser's request from another site's page is refused (Origin,
// Sec-Fetch-Site; without a token, a Host that is not loopback), and so is
// what JetStream could never store (an id over [MaxIdempotencyKeyLen], an
// event over the server's or the stream's size limit), with a 4xx rather
// than a 503 the sender would retry.
package ingest
