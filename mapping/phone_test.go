package mapping

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/nyaruka/phonenumbers"
	"github.com/stretchr/testify/require"
)

// slowPhone is the library's full parse, the reference the fast E.164 path must agree with.
func slowPhone(s string) (string, bool) {
	num, err := phonenumbers.Parse(s, "US")
	if err != nil || !phonenumbers.IsPossibleNumber(num) {
		return "", false
	}
	return phonenumbers.Format(num, phonenumbers.E164), true
}

func TestFastE164PathAgreesWithTheFullParserForEveryCountryCode(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	handled := 0
	for cc := 1; cc < 1000; cc++ {
		if phonenumbers.GetRegionCodeForCountryCode(cc) == phonenumbers.UNKNOWN_REGION {
			continue
		}
		for range 40 {
			n := 1 + rng.IntN(16)
			digits := make([]byte, n)
			for i := range digits {
				digits[i] = byte('0' + rng.IntN(10))
			}
			s := fmt.Sprintf("+%d%s", cc, digits)
			got, ok, h := e164(s)
			if !h {
				continue
			}
			handled++
			want, wantOK := slowPhone(s)
			require.Equal(t, wantOK, ok, "%s", s)
			if ok {
				require.Equal(t, want, got, "%s", s)
			}
		}
	}
	require.Greater(t, handled, 3000, "the fast path should cover most E.164 inputs")
}
