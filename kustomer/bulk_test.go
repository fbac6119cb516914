package kustomer_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

func TestBulkCreateReturnsJobThatPollsComplete(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{})
	c := srv.Client(t, kustomer.Config{})
	job, err := c.CreateCustomersBulk(t.Context(), []any{
		map[string]any{"name": "a", "externalId": "bulk-a"},
		[]byte(`{"name":"b","externalId":"bulk-b"}`),
	})
	require.NoError(t, err)
	require.Regexp(t, `^[0-9a-f]{24}$`, job.ID)
	require.True(t, job.Done())
	require.Len(t, job.IDs, 2)

	polled, err := c.BulkJob(t.Context(), job.ID)
	require.NoError(t, err)
	require.Equal(t, job.IDs, polled.IDs)
	require.Equal(t, "complete", polled.Status)

	found, err := c.CustomerByExternalID(t.Context(), "bulk-b")
	require.NoError(t, err)
	require.Equal(t, job.IDs[1], found.ID)
}

func TestBulkCreateRejectsBadBatchSizeWithoutRequest(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{})
	c := srv.Client(t, kustomer.Config{})
	_, err := c.CreateCustomersBulk(t.Context(), nil)
	require.Equal(t, kustomer.ClassPermanent, kustomer.ClassOf(err))
	_, err = c.CreateCustomersBulk(t.Context(), make([]any, kustomer.BulkMax+1))
	require.Equal(t, kustomer.ClassPermanent, kustomer.ClassOf(err))
	require.Zero(t, srv.Sandbox.Stats().Requests)
}

func TestBulkCreateWithInvalidItemIsPermanentWithItemPointer(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{})
	c := srv.Client(t, kustomer.Config{})
	_, err := c.CreateCustomersBulk(t.Context(), []any{map[string]any{"name": "ok"}, map[string]any{"phones": []any{map[string]any{"phone": "555"}}}})
	var ke *kustomer.Error
	require.ErrorAs(t, err, &ke)
	require.Equal(t, http.StatusBadRequest, ke.StatusCode)
	require.Equal(t, "/1/phones/0/phone", ke.Pointer)
}

func TestBulkJobParsesUnknownShapesLeniently(t *testing.T) {
	t.Parallel()
	f := setup(t, respond(http.StatusOK, `{"data":{"type":"bulk","id":"b1","attributes":{"status":"running","progress":{"done":3}}}}`))
	job, err := f.client.BulkJob(t.Context(), "b1")
	require.NoError(t, err)
	require.Equal(t, "running", job.Status)
	require.False(t, job.Done())
	require.Empty(t, job.IDs)
	require.Contains(t, job.Attributes, "progress")
}
