package worker

import (
	"errors"
	"strings"
)

// ErrReloadRefused is returned (wrapped) by [Worker.Reload] for workflows it
// did not apply: the running ones go on.
var ErrReloadRefused = errors.New("worker: reload refused")

// ErrNoWorkflow means a dead letter's workflow no longer consumes the
// entry's subject, so a replay would reach nobody who runs it.
var ErrNoWorkflow = errors.New("worker: the entry's workflow no longer reads its subject")

// noWorkflowError is a message that wraps [ErrNoWorkflow] without repeating
// it.
type noWorkflowError string

func (e noWorkflowError) Error() string        { return string(e) }
func (e noWorkflowError) Is(target error) bool { return target == ErrNoWorkflow }

// reloadRefusedError is a reload refused because of err: an
// [ErrReloadRefused] that wraps err without repeating the package's prefix
// ("worker: reload refused: stream LEADS …", not "…: worker: stream …").
type reloadRefusedError struct{ err error }

func (e reloadRefusedError) Error() string {
	return ErrReloadRefused.Error() + ": " + strings.TrimPrefix(e.err.Error(), "worker: ")
}
func (e reloadRefusedError) Is(target error) bool { return target == ErrReloadRefused }
func (e reloadRefusedError) Unwrap() error        { return e.err }
