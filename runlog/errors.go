package runlog

import "errors"

// ErrNotFound is returned by [Log.Get] for an unknown (or expired) run.
var ErrNotFound = errors.New("runlog: run not found")

// notFound is a message that wraps [ErrNotFound] without repeating it.
type notFound string

func (e notFound) Error() string        { return string(e) }
func (e notFound) Is(target error) bool { return target == ErrNotFound }
