package kustomer_test

import (
	"os"
	"testing"
	"time"

	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

func TestClientHonoursContractAgainstSandbox(t *testing.T) {
	t.Parallel()
	const key = "sandbox-contract-key"
	srv := kustomertest.New(t, sandbox.Config{APIKey: key})
	kustomertest.RunContract(t, srv.URL, key)
}

// TestClientHonoursContractAgainstRealKustomer runs the same suite against a
// real account. It creates real (clearly marked) customers there.
func TestClientHonoursContractAgainstRealKustomer(t *testing.T) {
	key, base := os.Getenv("KUSTOMER_CONTRACT_API_KEY"), os.Getenv("KUSTOMER_CONTRACT_BASE_URL")
	if key == "" || base == "" {
		t.Skip("set KUSTOMER_CONTRACT_API_KEY and KUSTOMER_CONTRACT_BASE_URL to run the contract against a real Kustomer account")
	}
	t.Parallel()
	kustomertest.RunContract(t, base, key)
}

// TestClientHonoursContractAgainstSandboxReadingBulkTheOtherWay runs the suite
// against a sandbox whose bulk jobs take time and whose gateway rejects a bulk
// request whole for one invalid item: the other reading Kustomer's
// documentation allows.
func TestClientHonoursContractAgainstSandboxReadingBulkTheOtherWay(t *testing.T) {
	t.Parallel()
	const key = "sandbox-contract-key"
	srv := kustomertest.New(t, sandbox.Config{APIKey: key, BulkRejectInvalid: true, BulkDelay: 100 * time.Millisecond})
	kustomertest.RunContract(t, srv.URL, key)
}
