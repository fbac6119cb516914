package ledger

import "errors"

// ErrClaimed means another replica is creating the same item right now, or
// that the claim or match lock this attempt held was taken over.
var ErrClaimed = errors.New("ledger: item is being created by another replica")

// ErrMatchLocked means another item is being matched on the same key. It
// is an [ErrClaimed].
var ErrMatchLocked error = claimedError("ledger: another item for the same customer is being matched")

// errClaimLost means a claim ran out while its attempt waited, and another
// replica took it over. It is an [ErrClaimed].
var errClaimLost error = claimedError("ledger: claim on the item lost while waiting for the budget")

// claimedError is a message that is an [ErrClaimed] without repeating it.
type claimedError string

func (e claimedError) Error() string        { return string(e) }
func (e claimedError) Is(target error) bool { return target == ErrClaimed }
