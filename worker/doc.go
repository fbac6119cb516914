// Package worker wires kustomer-sync to NATS JetStream: it creates the leads
// stream and one durable pull consumer per workflow, fetches events with
// back-pressure, maps them (package mapping), runs their items through the
// Loop (package loop) against Kustomer (package kustomer), publishes results,
// dead-letters what cannot succeed (package dlq), writes the run log, and only
// then acknowledges the event.
//
// Delivery is at least once; the ledger (a JetStream KV bucket) makes the
// effect on Kustomer exactly once per idempotency key. Systemic failures
// (401/403, an outage) pause the workflow: it stops fetching, naks what it
// holds without spending attempts, probes Kustomer and resumes by itself.
//
// A Worker is started with Start and stopped with Stop, which drains: events
// in flight finish before the deadline, or are left unacknowledged for
// redelivery, never half-recorded.
package worker
