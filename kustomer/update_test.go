package kustomer_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

func TestLookUpsByEmailAndPhoneFindTheCustomerAndAnAbsentOneIsNotFound(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{})
	c := srv.Client(t, kustomer.Config{})
	created, err := c.CreateCustomer(t.Context(), map[string]any{
		"emails": []any{map[string]any{"email": "jane+leads@example.com"}},
		"phones": []any{map[string]any{"phone": "+14155550100"}},
	})
	require.NoError(t, err)

	byEmail, err := c.CustomerByEmail(t.Context(), "Jane+Leads@example.com")
	require.NoError(t, err)
	require.Equal(t, created.ID, byEmail.ID)
	byPhone, err := c.CustomerByPhone(t.Context(), "+14155550100")
	require.NoError(t, err)
	require.Equal(t, created.ID, byPhone.ID)

	_, err = c.CustomerByEmail(t.Context(), "nobody@example.com")
	require.True(t, kustomer.IsNotFound(err), "got %v", err)
	_, err = c.CustomerByPhone(t.Context(), "+14155550199")
	require.True(t, kustomer.IsNotFound(err), "got %v", err)
	_, err = c.CustomerByEmail(t.Context(), "")
	require.Equal(t, kustomer.ClassPermanent, kustomer.ClassOf(err))

	st := srv.Sandbox.Stats()
	require.Equal(t, 2, st.LookupsByEmail)
	require.Equal(t, 2, st.LookupsByPhone)
	require.Equal(t, 5, st.Requests, "an empty value sends nothing")
}

func TestUpdateCustomerKeepsFieldsNotSentAndReplacesArraysSent(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{})
	c := srv.Client(t, kustomer.Config{})
	created, err := c.CreateCustomer(t.Context(), map[string]any{
		"name": "Jane", "externalId": "lead-1",
		"emails": []any{map[string]any{"email": "old@example.com"}},
	})
	require.NoError(t, err)

	updated, err := c.UpdateCustomer(t.Context(), created.ID, map[string]any{
		"name":   "Jane Doe",
		"emails": []any{map[string]any{"email": "old@example.com"}, map[string]any{"email": "new@example.com"}},
	})
	require.NoError(t, err)
	require.Equal(t, created.ID, updated.ID)
	require.Equal(t, "Jane Doe", updated.Attributes["name"])
	require.Equal(t, "lead-1", updated.Attributes["externalId"], "replace=false keeps what was not sent")
	require.Len(t, updated.Attributes["emails"], 2)

	found, err := c.CustomerByEmail(t.Context(), "new@example.com")
	require.NoError(t, err)
	require.Equal(t, created.ID, found.ID)
	require.Equal(t, 1, srv.Sandbox.Stats().Updates)
	require.Len(t, srv.Sandbox.Customers(), 1)
}

func TestUpdateCustomerErrorsAreClassifiedAsACreatesAre(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{})
	c := srv.Client(t, kustomer.Config{})
	created, err := c.CreateCustomer(t.Context(), map[string]any{"name": "Jane"})
	require.NoError(t, err)

	var eleven []any
	for i := range 11 {
		eleven = append(eleven, map[string]any{"email": string(rune('a'+i)) + "@example.com"})
	}
	_, err = c.UpdateCustomer(t.Context(), created.ID, map[string]any{"emails": eleven})
	ke := asError(t, err)
	require.Equal(t, kustomer.ClassPermanent, ke.Class)
	require.Equal(t, http.StatusBadRequest, ke.StatusCode)
	require.Equal(t, "/emails", ke.Pointer)
	require.Equal(t, "update", ke.Op)

	_, err = c.UpdateCustomer(t.Context(), "0123456789abcdef01234567", map[string]any{"name": "x"})
	require.True(t, kustomer.IsNotFound(err), "got %v", err)
	_, err = c.UpdateCustomer(t.Context(), "", map[string]any{"name": "x"})
	require.Equal(t, kustomer.ClassPermanent, kustomer.ClassOf(err))

	f := setup(t, respond(http.StatusNotFound, "<html>not here</html>"))
	_, err = f.client.UpdateCustomer(t.Context(), "abc", map[string]any{"name": "x"})
	require.Equal(t, kustomer.ClassSystemic, kustomer.ClassOf(err), "a 404 that is not Kustomer's is a wrong base URL")
}
