package loop_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kustomer-sync/kustomer-sync/loop"
)

// A Loop over three leads: one is created, one is refused by Kustomer (and
// not retried), one succeeds on its second attempt after a 503.
func ExampleRunner() {
	lim, err := loop.NewLimiter(loop.LimiterConfig{PerMinute: 1000}) // one per process
	if err != nil {
		panic(err)
	}
	r, err := loop.New(loop.Config{
		Concurrency: 2,
		Limiter:     lim,
		Policy:      loop.Policy{MaxAttempts: 3, InitialDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond},
	})
	if err != nil {
		panic(err)
	}
	rep := r.Run(context.Background(), []int{0, 1, 2}, func(ctx context.Context, index, attempt int) (loop.Result, error) {
		switch {
		case index == 1:
			return loop.Result{}, loop.Permanent(errors.New("kustomer: create: 400 badparam: invalid email"))
		case index == 2 && attempt == 1:
			return loop.Result{}, loop.RetryAfter(0, errors.New("kustomer: create: 503 unavailable"))
		}
		return loop.Result{CustomerID: fmt.Sprintf("cust-%d", index)}, nil
	})
	for _, o := range rep.Outcomes {
		fmt.Println(o.Index, o.Status, o.Attempts, o.CustomerID, o.Err)
	}
	// Output:
	// 0 created 1 cust-0 <nil>
	// 1 permanent 1  kustomer: create: 400 badparam: invalid email
	// 2 created 2 cust-2 <nil>
}
