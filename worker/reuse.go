package worker

import (
	"github.com/sourcegraph/conc"
)

// goroutines runs functions on goroutines that stay for the next function
// once theirs returns. Every event, and every Loop worker of an event, would
// otherwise start on a fresh stack and grow it again to what a Kustomer
// request and a JetStream publish need: a cost per customer of the order of
// a JetStream publish. One per workflow; close stops its goroutines once
// the workflow's events are done. A panic is raised again by close.
type goroutines struct {
	work chan func()
	quit chan struct{}
	wg   conc.WaitGroup
}

func newGoroutines() *goroutines {
	return &goroutines{work: make(chan func()), quit: make(chan struct{})}
}

// Go runs fn on an idle goroutine, or on a new one when none is idle.
func (g *goroutines) Go(fn func()) {
	select {
	case g.work <- fn:
	default:
		g.wg.Go(func() { g.serve(fn) })
	}
}

func (g *goroutines) serve(fn func()) {
	for {
		fn()
		select {
		case fn = <-g.work:
		case <-g.quit:
			return
		}
	}
}

// close ends the idle goroutines and waits for the busy ones; call it once
// nothing more is given to Go.
func (g *goroutines) close() {
	close(g.quit)
	g.wg.Wait()
}
