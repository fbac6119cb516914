// Package leads is the leads stream and the workflows' durable consumers on
// it: the stream's configuration and defaults, the plan that checks it
// against the workflows (CheckStream), which workflows read a subject, the
// consumers' metadata and where a new one starts (EnsureConsumer), one
// event's decoding and keys, the watcher that dead-letters an event
// JetStream stopped redelivering, and the check a replay makes that the
// entry's workflow still reads its subject.
package leads
