package sandbox_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

// BenchmarkCountingCustomers compares the two ways a benchmark can follow
// a drain of 100,000 leads: CountByExternalID copies the whole index
// (holding the sandbox meanwhile), Stats().ExternalIDs reads a count.
//
//	go test -run '^$' -bench CountingCustomers ./kustomer/sandbox/
func BenchmarkCountingCustomers(b *testing.B) {
	sb, err := sandbox.New(sandbox.Config{RatePerMinute: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sb.Close)
	const customers = 100000
	for i := range customers {
		r := httptest.NewRequest(http.MethodPost, "/v1/customers", strings.NewReader(fmt.Sprintf(`{"externalId":"lead-%d"}`, i)))
		w := httptest.NewRecorder()
		sb.ServeHTTP(w, r)
		if w.Code != http.StatusCreated {
			b.Fatalf("create %d: %d %s", i, w.Code, w.Body)
		}
	}
	b.Run("CountByExternalID", func(b *testing.B) {
		for b.Loop() {
			if n := len(sb.CountByExternalID()); n != customers {
				b.Fatal(n)
			}
		}
	})
	b.Run("Stats", func(b *testing.B) {
		for b.Loop() {
			if n := sb.Stats().ExternalIDs; n != customers {
				b.Fatal(n)
			}
		}
	})
}
