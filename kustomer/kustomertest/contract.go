package kustomertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
)

var hexID = regexp.MustCompile(`^[0-9a-f]{24}$`)

// RunContract runs the behaviour both the sandbox and Kustomer must show to
// the client, as subtests of t: creating a customer, looking it up by
// externalId, a missing look-up, schema errors and a bad key. Against a real
// account it creates two customers with unique, clearly marked externalIds
// and emails (kustomer-sync-contract-…); it spends about ten rate units.
func RunContract(t *testing.T, baseURL, apiKey string) {
	newClient := func(t *testing.T, key string) *kustomer.Client {
		t.Helper()
		c, err := kustomer.New(kustomer.Config{BaseURL: baseURL, APIKey: key, Timeout: 30 * time.Second})
		require.NoError(t, err)
		return c
	}
	ctx := func(t *testing.T) context.Context {
		c, cancel := context.WithTimeout(t.Context(), time.Minute)
		t.Cleanup(cancel)
		return c
	}
	runID := uniqueID(t)

	t.Run("CreatedCustomerEchoesInputAndCanBeLookedUpByExternalID", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		ext := "kustomer-sync-contract-" + runID + "-a"
		email := "contract-" + runID + "@example.com"
		created, err := c.CreateCustomer(ctx(t), map[string]any{
			"name":       "Contract Jane " + runID,
			"externalId": ext,
			"emails":     []map[string]any{{"email": email, "type": "work"}},
			"phones":     []map[string]any{{"phone": "+14155550100", "type": "mobile"}},
		})
		require.NoError(t, err)
		require.Regexp(t, hexID, created.ID)
		require.Equal(t, "customer", created.Type)
		require.Equal(t, "Contract Jane "+runID, created.Attributes["name"])
		require.Equal(t, ext, created.Attributes["externalId"])
		emails, ok := created.Attributes["emails"].([]any)
		require.True(t, ok, "attributes.emails is an array")
		require.Len(t, emails, 1)
		require.Equal(t, email, emails[0].(map[string]any)["email"])

		rl := c.RateLimit()
		require.Positive(t, rl.Limit, "responses carry x-ratelimit-limit")
		require.Equal(t, http.StatusCreated, rl.Status)

		found, err := c.CustomerByExternalID(ctx(t), ext)
		require.NoError(t, err)
		require.Equal(t, created.ID, found.ID)
	})

	t.Run("RawJSONBodyIsSentAsIs", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		ext := "kustomer-sync-contract-" + runID + "-b/with slash&odd=chars"
		created, err := c.CreateCustomer(ctx(t), []byte(`{"name":"Contract Raw `+runID+`","externalId":"`+ext+`"}`))
		require.NoError(t, err)
		found, err := c.CustomerByExternalID(ctx(t), ext)
		require.NoError(t, err)
		require.Equal(t, created.ID, found.ID)
	})

	t.Run("LookUpOfUnknownExternalIDIsNotFound", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		_, err := c.CustomerByExternalID(ctx(t), "kustomer-sync-contract-"+runID+"-absent")
		require.Error(t, err)
		require.True(t, kustomer.IsNotFound(err), "got %v", err)
		require.Equal(t, kustomer.ClassPermanent, kustomer.ClassOf(err))
	})

	t.Run("UnknownTopLevelKeyIsPermanent400", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		_, err := c.CreateCustomer(ctx(t), map[string]any{"name": "x", "notAField": 1})
		requirePermanent400(t, err)
	})

	t.Run("CustomKeyWithoutTypeSuffixIsPermanent400", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		_, err := c.CreateCustomer(ctx(t), map[string]any{"custom": map[string]any{"tier": "gold"}})
		requirePermanent400(t, err)
	})

	t.Run("TooManyEmailsIsPermanent400", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		var emails []map[string]any
		for i := range 11 {
			emails = append(emails, map[string]any{"email": "contract-" + runID + "-" + string(rune('a'+i)) + "@example.com"})
		}
		_, err := c.CreateCustomer(ctx(t), map[string]any{"emails": emails})
		requirePermanent400(t, err)
	})

	t.Run("WrongAPIKeyIsSystemic", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, "kustomer-sync-contract-wrong-key")
		_, err := c.CreateCustomer(ctx(t), map[string]any{"name": "never created"})
		require.Error(t, err)
		require.Equal(t, kustomer.ClassSystemic, kustomer.ClassOf(err), "got %v", err)
		require.NotContains(t, err.Error(), "kustomer-sync-contract-wrong-key")
	})
}

func requirePermanent400(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	var ke *kustomer.Error
	require.ErrorAs(t, err, &ke)
	require.Equal(t, http.StatusBadRequest, ke.StatusCode, "got %v", err)
	require.Equal(t, kustomer.ClassPermanent, ke.Class)
	require.NotEmpty(t, ke.Message)
}

func uniqueID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}
