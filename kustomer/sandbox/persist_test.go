package sandbox_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

// A sandbox loaded from another's file has its customers, with their ids,
// found by every look-up, and creates new ones under new ids.
func TestSaveFileAndLoadFileKeepCustomersAndTheirLookUps(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	id := createCustomer(t, sb,
		`{"name":"Jane","externalId":"crm-42","emails":[{"email":"Jane@Example.com"}],"phones":[{"phone":"+14155550100"}]}`)
	path := filepath.Join(t.TempDir(), "sandbox", "customers.json")
	require.NoError(t, sb.SaveFile(path))

	again := newSandbox(t, sandbox.Config{})
	n, err := again.LoadFile(path)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	for _, p := range []string{"/v1/customers/externalId=crm-42", "/v1/customers/" + id, "/v1/customers/email=jane%40example.com", "/v1/customers/phone=%2B14155550100"} {
		require.Equal(t, id, lookupID(t, again, p), p)
	}
	require.NotEqual(t, id, createCustomer(t, again, `{"name":"Bob"}`))
	require.Len(t, again.Customers(), 2)

	_, err = again.LoadFile(path)
	require.ErrorContains(t, err, "sandbox: load: the sandbox has customers already")
	empty := newSandbox(t, sandbox.Config{})
	n, err = empty.LoadFile(filepath.Join(t.TempDir(), "none.json"))
	require.NoError(t, err, "no file yet: no customers")
	require.Zero(t, n)
}
