package kustomer_test

import (
	"fmt"
	"testing"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

// BenchmarkCreateCustomerAgainstSandbox measures a create over loopback HTTP,
// sandbox validation included: the ceiling the sandbox puts on local benches.
func BenchmarkCreateCustomerAgainstSandbox(b *testing.B) {
	srv := kustomertest.New(b, sandbox.Config{RatePerMinute: -1})
	c := srv.Client(b, kustomer.Config{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			_, err := c.CreateCustomer(b.Context(), map[string]any{
				"name":       "Bench",
				"externalId": fmt.Sprintf("bench-%p-%d", pb, i),
				"emails":     []map[string]any{{"email": "bench@example.com"}},
				"custom":     map[string]any{"tierStr": "gold", "scoreNum": 3},
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
