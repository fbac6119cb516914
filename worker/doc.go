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
// A Worker is the service of one replica, built only with New from a
// [Config], which it checks whole: it owns the Kustomer client, the limiter
// that paces it, the replica's share of the budget ([Budget]), the ledger,
// the run log and the metrics. Start runs it, Reload replaces its workflows,
// Stop drains (events in flight finish before the deadline, or are left
// unacknowledged for redelivery, never half-recorded), StopAndCancel stops
// at once, and Stopped is closed when it has stopped. The replica keeps its
// share of the budget until its last request to Kustomer ended.
//
// A workflow in bulk mode (bulk.go) gathers the items of many events into
// bulk requests and follows each job to its end; every item still gets its
// own outcome, as in per-item mode. A workflow's events and Loop workers run
// on goroutines it reuses (a conc pool per workflow, in fetchLoop).
package worker
