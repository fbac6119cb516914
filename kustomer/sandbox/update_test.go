package sandbox_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
)

// createCustomer posts body and returns the new customer's id.
func createCustomer(t *testing.T, sb *sandbox.Sandbox, body string) string {
	t.Helper()
	rec := call(t, sb, http.MethodPost, "/v1/customers", body)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	return decode(t, rec)["data"].(map[string]any)["id"].(string)
}

// lookupID returns the id a look-up finds, or "" on 404.
func lookupID(t *testing.T, sb *sandbox.Sandbox, path string) string {
	t.Helper()
	rec := call(t, sb, http.MethodGet, path, "")
	if rec.Code == http.StatusNotFound {
		return ""
	}
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	return decode(t, rec)["data"].(map[string]any)["id"].(string)
}

func TestUpdateWithReplaceFalseReplacesFieldsSentAndKeepsTheOthers(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC)
	clock := looptest.NewFakeClock(start)
	sb := newSandbox(t, sandbox.Config{Now: clock.Now})
	id := createCustomer(t, sb, `{"name":"Jane","externalId":"lead-1","locale":"en",
		"emails":[{"email":"old@example.com"}],"phones":[{"phone":"+14155550100"}],
		"custom":{"tierStr":"gold","scoreNum":1}}`)

	clock.Advance(time.Minute)
	rec := call(t, sb, http.MethodPut, "/v1/customers/"+id+"?replace=false",
		`{"name":"Jane Doe","emails":[{"email":"old@example.com"},{"email":"new@example.com","type":"work"}],"custom":{"scoreNum":2}}`)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	data := decode(t, rec)["data"].(map[string]any)
	require.Equal(t, id, data["id"])
	require.Equal(t, "customer", data["type"])
	attrs := data["attributes"].(map[string]any)
	require.Equal(t, "Jane Doe", attrs["name"])
	require.Equal(t, "Jane Doe", attrs["displayName"])
	require.Equal(t, "lead-1", attrs["externalId"], "a field not sent is kept")
	require.Equal(t, "en", attrs["locale"])
	require.Len(t, attrs["phones"], 1, "an array not sent is kept")
	emails := attrs["emails"].([]any)
	require.Len(t, emails, 2, "an array sent replaces the customer's")
	require.Equal(t, "new@example.com", emails[1].(map[string]any)["email"])
	require.Equal(t, map[string]any{"tierStr": "gold", "scoreNum": 2.0}, attrs["custom"], "custom attributes merge key by key")
	require.Equal(t, "2026-05-24T12:00:00.000Z", attrs["createdAt"])
	require.Equal(t, "2026-05-24T12:01:00.000Z", attrs["updatedAt"])

	require.Equal(t, attrs, sb.Customers()[0].Attributes, "the update is stored")
	require.Equal(t, id, lookupID(t, sb, "/v1/customers/email=new%40example.com"))

	rec = call(t, sb, http.MethodPut, "/v1/customers/"+id+"?replace=false", `{"emails":[{"email":"new@example.com"}]}`)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Empty(t, lookupID(t, sb, "/v1/customers/email=old%40example.com"), "a removed email no longer finds the customer")
	require.Equal(t, id, lookupID(t, sb, "/v1/customers/externalId=lead-1"))

	st := sb.Stats()
	require.Equal(t, 2, st.Updates)
	require.Equal(t, 1, st.Creates)
}

func TestUpdateWithoutReplaceFalseReplacesEveryField(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	id := createCustomer(t, sb, `{"name":"Jane","externalId":"lead-1"}`)
	rec := call(t, sb, http.MethodPut, "/v1/customers/"+id, `{"name":"Only"}`)
	require.Equal(t, http.StatusOK, rec.Code)
	attrs := decode(t, rec)["data"].(map[string]any)["attributes"].(map[string]any)
	require.NotContains(t, attrs, "externalId")
	require.Empty(t, lookupID(t, sb, "/v1/customers/externalId=lead-1"))
	require.Empty(t, sb.CountByExternalID())
	require.Zero(t, sb.Stats().ExternalIDs, "the update took lead-1 away")
}

func TestUpdateValidatesTheClosedSchemaAndAnswers404ForAnUnknownID(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	id := createCustomer(t, sb, `{"name":"Jane"}`)
	var eleven []string
	for i := range 11 {
		eleven = append(eleven, fmt.Sprintf(`{"email":"e%d@example.com"}`, i))
	}
	cases := map[string]struct{ body, pointer string }{
		"eleven emails":   {`{"emails":[` + strings.Join(eleven, ",") + `]}`, "/emails"},
		"unknown field":   {`{"nickname":"J"}`, "/nickname"},
		"clientRef":       {`{"_clientRef":"r1"}`, "/_clientRef"},
		"bad custom type": {`{"custom":{"scoreNum":"high"}}`, "/custom/scoreNum"},
	}
	for name, tc := range cases {
		rec := call(t, sb, http.MethodPut, "/v1/customers/"+id+"?replace=false", tc.body)
		require.Equal(t, http.StatusBadRequest, rec.Code, name)
		e := firstError(t, rec)
		require.Equal(t, "badparam", e["code"], name)
		require.Equal(t, tc.pointer, e["source"].(map[string]any)["pointer"], name)
	}
	require.Equal(t, "Jane", sb.Customers()[0].Attributes["name"], "a rejected update changes nothing")

	rec := call(t, sb, http.MethodPut, "/v1/customers/0123456789abcdef01234567?replace=false", `{"name":"x"}`)
	require.Equal(t, http.StatusNotFound, rec.Code)
	require.JSONEq(t, `{"errors":[{"status":404,"code":"notfound","title":"Not Found"}]}`, rec.Body.String())
	require.Equal(t, http.StatusNotFound, call(t, sb, http.MethodPut, "/v1/customers/email=x", `{"name":"x"}`).Code)
	require.Zero(t, sb.Stats().Updates)
}

func TestLookUpOfAKeySeveralCustomersShareFindsTheOldestAndIsCountedByKind(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	first := createCustomer(t, sb, `{"emails":[{"email":"Shared@Example.com"}],"phones":[{"phone":"+14155550100"}]}`)
	second := createCustomer(t, sb, `{"emails":[{"email":"shared@example.com"}],"phones":[{"phone":"+14155550100"}]}`)

	require.Equal(t, first, lookupID(t, sb, "/v1/customers/email=SHARED%40example.com"), "emails match case-insensitively")
	require.Equal(t, first, lookupID(t, sb, "/v1/customers/phone=%2B14155550100"))
	require.Equal(t, first, lookupID(t, sb, "/v1/customers/phone=+14155550100"), "an unescaped + is a plus")
	require.Empty(t, lookupID(t, sb, "/v1/customers/phone=%2B14155550199"))

	rec := call(t, sb, http.MethodPut, "/v1/customers/"+first+"?replace=false", `{"emails":[],"phones":[]}`)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, second, lookupID(t, sb, "/v1/customers/email=shared%40example.com"), "the older one no longer holds it")
	require.Equal(t, second, lookupID(t, sb, "/v1/customers/phone=%2B14155550100"))
	require.Equal(t, first, lookupID(t, sb, "/v1/customers/"+first))
	require.Empty(t, lookupID(t, sb, "/v1/customers/externalId=none"))

	st := sb.Stats()
	require.Equal(t, 2, st.LookupsByEmail)
	require.Equal(t, 4, st.LookupsByPhone)
	require.Equal(t, 1, st.LookupsByExternalID)
	require.Equal(t, 8, st.Lookups)
}
