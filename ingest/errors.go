package ingest

import "errors"

// ErrFormat is returned (wrapped) for a format a [Reader] does not know.
var ErrFormat = errors.New("ingest: unknown format")

// ErrNoStream is returned (wrapped) when no stream captures the subject. It
// is always wrapped in a message that starts "ingest: publish to <subject>",
// so its own text carries no prefix.
var ErrNoStream = errors.New("no stream captures that subject")
