package worker

import "context"

// admit waits until the batcher can hold n more items, or holds none (an
// event larger than the bound runs alone), and counts them held until
// unadmit.
func (b *batcher) admit(ctx context.Context, n int) bool {
	for {
		b.heldMu.Lock()
		if b.held == 0 || b.held+n <= b.maxItems {
			b.held += n
			b.peak = max(b.peak, b.held)
			b.inRun++
			b.seen++
			b.seenItems += n
			b.roomChanged() // the fetch loop learns the event's size
			b.heldMu.Unlock()
			return true
		}
		room := b.room
		b.heldMu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return false
		}
	}
}

func (b *batcher) unadmit(n int) {
	b.heldMu.Lock()
	b.held -= n
	b.inRun--
	b.roomChanged()
	b.heldMu.Unlock()
}

// release counts n items of an event still running no longer held.
func (b *batcher) release(n int) {
	if n == 0 {
		return
	}
	b.heldMu.Lock()
	b.held -= n
	b.roomChanged()
	b.heldMu.Unlock()
}

// roomChanged wakes whoever waits for room. Callers hold heldMu.
func (b *batcher) roomChanged() {
	close(b.room)
	b.room = make(chan struct{})
}

// fetchable is how many of n events the fetch loop may fetch now: as many
// as the items bound has room for, at the mean size of an event so far,
// counting the events fetched and not yet holding items at that size too.
// It waits while there is no room, and returns 0 when ctx ends.
func (b *batcher) fetchable(ctx context.Context, n int) int {
	for {
		b.heldMu.Lock()
		mean := 1
		if b.seen > 0 {
			mean = max(1, (b.seenItems+b.seen-1)/b.seen)
		}
		waiting := b.fetched - b.inRun
		free := b.maxItems - b.held - waiting*mean
		switch {
		case b.seen == 0 && waiting == 0:
			b.heldMu.Unlock()
			return 1 // the first event's size is unknown: one alone
		case b.seen > 0 && (free >= mean || b.held == 0 && waiting == 0):
			b.heldMu.Unlock()
			return min(n, max(1, free/mean))
		case b.seen > 0 && waiting == 0 && free > 0:
			// Room for fewer items than the mean event holds: one event,
			// which may be small, rather than wait for a large one to end.
			b.heldMu.Unlock()
			return 1
		}
		room := b.room
		b.heldMu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return 0
		}
	}
}

// fetchedEvents counts n events fetched, handledEvent one whose handling ended.
func (b *batcher) fetchedEvents(n int) {
	b.heldMu.Lock()
	b.fetched += n
	b.heldMu.Unlock()
}

func (b *batcher) handledEvent() {
	b.heldMu.Lock()
	b.fetched--
	b.roomChanged()
	b.heldMu.Unlock()
}
