package kustomertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
)

var hexID = regexp.MustCompile(`^[0-9a-f]{24}$`)

// RunContract runs the behaviour both the sandbox and Kustomer must show to
// the client, as subtests of t: creating a customer, looking it up by
// externalId, email and phone, updating it with replace=false, a bulk job
// followed to its per-item results, missing look-ups, schema errors and a bad
// key. Against a real account it creates about eight customers with unique,
// clearly marked externalIds and emails (kustomer-sync-contract-…); it spends
// about thirty rate units, more while bulk jobs are running (one per poll,
// one a second).
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

		requireFound(t, created.ID)(c.CustomerByExternalID(ctx(t), ext))
	})

	t.Run("RawJSONBodyIsSentAsIs", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		ext := "kustomer-sync-contract-" + runID + "-b/with slash&odd=chars"
		created, err := c.CreateCustomer(ctx(t), []byte(`{"name":"Contract Raw `+runID+`","externalId":"`+ext+`"}`))
		require.NoError(t, err)
		requireFound(t, created.ID)(c.CustomerByExternalID(ctx(t), ext))
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

	t.Run("LookUpsByEmailAndPhoneFindTheCustomer", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		email := "contract-lookup-" + runID + "@example.com"
		phone := "+4420" + digits(runID, 8)
		created, err := c.CreateCustomer(ctx(t), map[string]any{
			"externalId": "kustomer-sync-contract-" + runID + "-lookup",
			"emails":     []map[string]any{{"email": email}},
			"phones":     []map[string]any{{"phone": phone}},
		})
		require.NoError(t, err)
		requireFound(t, created.ID)(c.CustomerByEmail(ctx(t), email))
		requireFound(t, created.ID)(c.CustomerByPhone(ctx(t), phone))

		_, err = c.CustomerByEmail(ctx(t), "contract-absent-"+runID+"@example.com")
		require.True(t, kustomer.IsNotFound(err), "got %v", err)
	})

	t.Run("UpdateWithReplaceFalseKeepsFieldsNotSentAndReplacesArraysSent", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		ext := "kustomer-sync-contract-" + runID + "-update"
		first := "contract-update-" + runID + "@example.com"
		created, err := c.CreateCustomer(ctx(t), map[string]any{
			"name": "Contract Update " + runID, "externalId": ext,
			"emails": []map[string]any{{"email": first}},
		})
		require.NoError(t, err)

		updated, err := c.UpdateCustomer(ctx(t), created.ID, map[string]any{"name": "Contract Updated " + runID})
		require.NoError(t, err)
		require.Equal(t, created.ID, updated.ID)
		require.Equal(t, "Contract Updated "+runID, updated.Attributes["name"])
		require.Equal(t, ext, updated.Attributes["externalId"], "a field not sent is kept")
		require.Len(t, updated.Attributes["emails"], 1, "an array not sent is kept")

		second := "contract-update-2-" + runID + "@example.com"
		updated, err = c.UpdateCustomer(ctx(t), created.ID, map[string]any{
			"emails": []map[string]any{{"email": first}, {"email": second}},
		})
		require.NoError(t, err)
		require.Len(t, updated.Attributes["emails"], 2)
		requireFound(t, created.ID)(c.CustomerByEmail(ctx(t), second))
	})

	t.Run("UpdateOfUnknownIDIsNotFound", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		_, err := c.UpdateCustomer(ctx(t), "0123456789abcdef01234567", map[string]any{"name": "never"})
		require.True(t, kustomer.IsNotFound(err), "got %v", err)
	})

	t.Run("BulkJobCreatesEveryItemAndReportsEachByRef", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		items := []kustomer.BulkItem{
			{Ref: "a", Body: map[string]any{"name": "Contract Bulk A " + runID, "externalId": "kustomer-sync-contract-" + runID + "-bulk-a"}},
			{Ref: "b", Body: map[string]any{"name": "Contract Bulk B " + runID, "externalId": "kustomer-sync-contract-" + runID + "-bulk-b"}},
		}
		job, err := c.CreateCustomersBulk(ctx(t), items)
		require.NoError(t, err)
		require.Regexp(t, hexID, job.ID)
		out := awaitBulk(t, ctx(t), c, job.ID).Outcomes([]string{"a", "b"})
		for i, o := range out {
			require.NoError(t, o.Err, "item %d", i)
			found, err := c.CustomerByExternalID(ctx(t), "kustomer-sync-contract-"+runID+"-bulk-"+o.Ref)
			require.NoError(t, err)
			require.Equal(t, found.ID, o.CustomerID)
		}
	})

	t.Run("BulkItemBreakingTheSchemaFailsPermanentlyAloneOrRejectsTheRequest", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, apiKey)
		items := []kustomer.BulkItem{
			{Ref: "ok", Body: map[string]any{"externalId": "kustomer-sync-contract-" + runID + "-bulk-ok"}},
			{Ref: "bad", Body: map[string]any{"custom": map[string]any{"tier": "gold"}}},
		}
		job, err := c.CreateCustomersBulk(ctx(t), items)
		if err != nil {
			// Kustomer's documentation allows both readings: the gateway
			// rejects the whole array, naming the item.
			requirePermanent400(t, err)
			i, ok := kustomer.BulkRejectedItem(err)
			require.True(t, ok, "the 400 names the item: %v", err)
			require.Equal(t, 1, i)
			return
		}
		out := awaitBulk(t, ctx(t), c, job.ID).Outcomes([]string{"ok", "bad"})
		require.NoError(t, out[0].Err)
		require.NotEmpty(t, out[0].CustomerID)
		require.Equal(t, kustomer.ClassPermanent, kustomer.ClassOf(out[1].Err), "got %v", out[1].Err)
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

// requireFound returns a check that a look-up found customer id.
func requireFound(t *testing.T, id string) func(*kustomer.Customer, error) {
	t.Helper()
	return func(found *kustomer.Customer, err error) {
		t.Helper()
		require.NoError(t, err)
		require.Equal(t, id, found.ID)
	}
}

// awaitBulk polls job id once a second until it is complete, then reads its
// results.
func awaitBulk(t *testing.T, ctx context.Context, c *kustomer.Client, id string) *kustomer.BulkResults {
	t.Helper()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		job, err := c.BulkJob(ctx, id)
		require.NoError(t, err)
		if job.Done() {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("bulk job %s did not complete: %v", id, ctx.Err())
		case <-tick.C:
		}
	}
	res, err := c.BulkResults(ctx, id)
	require.NoError(t, err)
	return res
}

// digits turns the hex run id into n decimal digits, for a phone number that
// is unique to the run.
func digits(hexID string, n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		b.WriteByte('0' + hexID[i%len(hexID)]%10)
	}
	return b.String()
}

func uniqueID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}
