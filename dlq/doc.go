// Package dlq owns dead letters: the stream that keeps events the worker could
// not turn into customers, the headers that say why each one is there, and the
// tooling to list, inspect, replay and purge them.
//
// A dead-letter entry is the original event payload, byte for byte, published
// to a dead-letter subject (by default dlq.<workflow>) and stored in a
// JetStream stream (by default [StreamDefault]). Its headers (see [Record] and
// the Header… constants) carry the error, its class (an [outcome.Outcome]), the attempts, the
// workflow, the original subject, stream sequence and Nats-Msg-Id, the failed
// Loop item indexes, first and last failure times, and Kustomer's HTTP status
// and error code. A record never holds a secret: the Kustomer API key is not
// part of any error the client returns, and [Record.Header] redacts anything
// that looks like a bearer token anyway. Every header value is bounded, so an
// entry is storable whatever its event carried: a subject, Nats-Msg-Id,
// event key or Kustomer code longer than [MaxValueLen] is in its header as
// its [BoundedValue] ("sha256:<hex>") and whole in the entry's object.
//
// [Publish] is what the worker calls before it acknowledges (or terminates) a
// failed event: if Publish returns an error the event must not be acknowledged.
// Publishing the same failure twice (a crash between the publish and the ack)
// stores it once, thanks to a Nats-Msg-Id derived from the failure.
//
// [Store.Replay] republishes entries to their original subject with the
// replay instructions ([Replay]: the entry, its workflow, the failed items,
// the original event's identity and history) in Ksync-Replay-* headers,
// signed with an HMAC key kept in the deployment's KV bucket
// ([LoadReplayKey]). The worker acts on those headers only when the
// signature verifies ([ReplayKey.ReadReplay]): anyone who can publish a lead
// can write headers, so unsigned ones are ignored and the event is a new
// one. A replay carries the event key whole, so its items are recognised as
// the original's; an entry whose key is too long for a replay's headers is
// kept ([ErrEventKeyTooLong]). The Nats-Msg-Id of a replay ([ReplayMsgID])
// is derived from the stream's creation time, the entry's id and its
// content, so replays of two entries never collide, not even across a
// recreated stream; an entry is deleted only after JetStream stored its
// republish, or reported the same replay stored before. Running the same
// replay twice publishes once.
//
// dlq holds records and tooling, not a worker: it knows nothing of how events
// are consumed.
package dlq
