// Package eventid is the identity of a lead event published by
// kustomer-sync (the `publish` command, `demo` and HTTP ingest): its
// Nats-Msg-Id, which JetStream de-duplicates, and the event key in it,
// which the worker's ledger keys items by.
//
// The Nats-Msg-Id is scoped by subject and carries a digest of the payload:
// the same record id on two subjects (two workflows) is two events, and a
// changed record re-sent under its id is a new event that reaches the
// worker, while an exact resend stays a duplicate. The event key leaves the
// digest out, so a changed record keeps its idempotency key: the ledger
// still creates one customer per lead, and a workflow with match updates it.
package eventid

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// digestMarker precedes the payload's digest at the end of a Nats-Msg-Id.
const digestMarker = ";sha256="

// digestLen is the length of the digest in hex: 128 bits.
const digestLen = 32

// MsgID is the Nats-Msg-Id of the event with record id id published to
// subject with payload data: "<subject>:<id>;sha256=<digest of data>".
func MsgID(subject, id string, data []byte) string {
	sum := sha256.Sum256(data)
	return subject + ":" + id + digestMarker + hex.EncodeToString(sum[:digestLen/2])
}

// Key is the event key of the Nats-Msg-Id msgID: a MsgID without its
// digest ("<subject>:<id>"), any other id as it is (a publisher's own, such
// as `nats pub -H Nats-Msg-Id:lead-1`).
func Key(msgID string) string {
	i := len(msgID) - digestLen - len(digestMarker)
	if i <= 0 || msgID[i:i+len(digestMarker)] != digestMarker || !isHex(msgID[i+len(digestMarker):]) {
		return msgID
	}
	return msgID[:i]
}

func isHex(s string) bool {
	return strings.Trim(s, "0123456789abcdef") == ""
}
