package worker

import (
	"errors"
	"strings"
)

// ErrReloadRefused is returned (wrapped) by [Worker.Reload] for workflows it
// did not apply: the running ones go on.
var ErrReloadRefused = errors.New("worker: reload refused")

// reloadRefusedError is a reload refused because of err: an
// [ErrReloadRefused] that wraps err without repeating the package's prefix
// ("worker: reload refused: stream LEADS …", not "…: worker: stream …").
type reloadRefusedError struct{ err error }

func (e reloadRefusedError) Error() string {
	return ErrReloadRefused.Error() + ": " + strings.TrimPrefix(e.err.Error(), "worker: ")
}
func (e reloadRefusedError) Is(target error) bool { return target == ErrReloadRefused }
func (e reloadRefusedError) Unwrap() error        { return e.err }
