package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRedactURLLeavesNoFragmentOfAPasswordWithOddCharacters(t *testing.T) {
	t.Parallel()
	// Every fragment of these users and passwords holds "Q": none may be
	// printed, whatever the separators cut them into.
	users := []string{"Qusr", "Qa,Qb", "Q u"}
	passwords := []string{
		"Qpa,Qss", "Qp/Qq", "Qp?Qq", "Qp Qq", "Qp%Qq", "Qp@Qq", "Qp,Qq@Qr", "Qp@Qq,Qr",
		"Qa/Qb?Qc Qd%Qe,Qf@Qg", ",Qlead", "Qtrail,", "Q,,Q", "Qp:Qq", "Qp:4222,Qq", "Qp,nats:Qq",
	}
	for _, user := range users {
		for _, pw := range passwords {
			for _, in := range []string{
				user + ":" + pw + "@host:4222",
				"nats://" + user + ":" + pw + "@host:4222",
				user + ":" + pw + "@h1:4222," + user + ":" + pw + "@host:4222",
				"nats://" + user + ":" + pw + "@h1:4222,nats://" + user + ":" + pw + "@host:4222",
				"nats://h0:4222," + user + ":" + pw + "@host:4222",
				"nats://h0:4222, tls://" + user + ":" + pw + "@host:4222",
				user + ":" + pw + "@host:4222,nats://h2:4222",
				pw + "@host:4222",
				"nats://" + pw + "@host:4222",
			} {
				out := redactURL(in)
				require.NotContains(t, out, "Q", "%q printed as %q", in, out)
				require.Contains(t, out, redacted+"@host:4222", "%q printed as %q", in, out)
			}
		}
	}
}

func TestRedactURLKeepsWhatIsNoUserInformation(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                                      "",
		"nats://h:4222":                         "nats://h:4222",
		"nats://nats-1:4222,nats://nats-2:4222": "nats://nats-1:4222,nats://nats-2:4222",
		"nats-1:4222, nats-2:4222":              "nats-1:4222, nats-2:4222",
		"tls://[::1]:4222,nats://10.0.0.1":      "tls://[::1]:4222,nats://10.0.0.1",
		"https://acme.api.kustomerapp.com/v1":   "https://acme.api.kustomerapp.com/v1",
		"eu":                                    "eu",
		// Each element's own user information, hosts kept.
		"nats://u:a@h1,nats://u:b@h2":      "nats://[redacted]@h1,nats://[redacted]@h2",
		"nats://u:a@h1,nats://h2:4222":     "nats://[redacted]@h1,nats://h2:4222",
		"https://user:pw@kustomer.example": "https://[redacted]@kustomer.example",
		// Where a password may have begun earlier, more is hidden.
		"user:pa,ss@host:4222":         "[redacted]@host:4222",
		"nats://u:pa,ss@host:4222":     "nats://[redacted]@host:4222",
		"nats://h0:4222,u:p@host:4222": "nats://[redacted]@host:4222",
		"nats://u:pw":                  "nats://[redacted]",
	} {
		require.Equal(t, want, redactURL(in), "%q", in)
	}
}
