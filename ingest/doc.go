// Package ingest reads lead events from JSON, JSON lines or CSV and publishes
// them to JetStream with a de-duplication id, so the same input published
// twice stores each event once (within the stream's duplicate window).
//
// A [Reader] turns an input into [Event] values, naming the input and line in
// its errors; a [Publisher] sends them with a bounded window of asynchronous
// publishes and counts an event only once JetStream acknowledged it. The
// `publish` command and HTTP ingest both use them.
package ingest
