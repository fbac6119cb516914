package leads

import "errors"

// ErrNoWorkflow means a dead letter's workflow no longer consumes the
// entry's subject, so a replay would reach nobody who runs it.
var ErrNoWorkflow = errors.New("leads: the entry's workflow no longer reads its subject")

// noWorkflowError is a message that wraps [ErrNoWorkflow] without repeating
// it.
type noWorkflowError string

func (e noWorkflowError) Error() string        { return string(e) }
func (e noWorkflowError) Is(target error) bool { return target == ErrNoWorkflow }
