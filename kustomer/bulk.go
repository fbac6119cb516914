package kustomer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// BulkJob is a bulk operation as Kustomer reports it. Kustomer's spec and its
// newer guide disagree on the shape, so it is parsed leniently: unknown fields
// are kept in Attributes, missing ones are zero.
type BulkJob struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Status string `json:"status"` // "queued", "running", "complete", …; empty if not reported
	// Completed is true when the job reports completed, or its status is
	// "complete" or "completed".
	Completed  bool              `json:"completed"`
	IDs        []string          `json:"ids,omitempty"` // created customer ids, when reported
	Attributes map[string]any    `json:"attributes,omitempty"`
	Links      map[string]string `json:"links,omitempty"`
}

// Done reports whether polling can stop.
func (j *BulkJob) Done() bool { return j.Completed }

// CreateCustomersBulk submits up to [BulkMax] customers in one request
// (POST /v1/customers/bulk), which costs one rate-limit unit. Each body is
// marshalled as for [Client.CreateCustomer]. The job may still be running:
// poll [Client.BulkJob] until [BulkJob.Done].
func (c *Client) CreateCustomersBulk(ctx context.Context, bodies []any) (*BulkJob, error) {
	const op = "bulk"
	if len(bodies) == 0 || len(bodies) > BulkMax {
		return nil, &Error{Op: op, Class: ClassPermanent, Message: fmt.Sprintf("bulk needs 1 to %d customers, got %d", BulkMax, len(bodies))}
	}
	items := make([]json.RawMessage, len(bodies))
	for i, b := range bodies {
		raw, err := marshalBody(op, b)
		if err != nil {
			return nil, err
		}
		items[i] = raw
	}
	b, err := json.Marshal(items)
	if err != nil {
		return nil, &Error{Op: op, Class: ClassPermanent, Message: "cannot encode request body: " + err.Error(), Err: err}
	}
	var out bulkEnvelope
	if err := c.do(ctx, op, http.MethodPost, "/v1/customers/bulk", b, &out); err != nil {
		return nil, err
	}
	return out.job(), nil
}

// BulkJob polls a bulk operation (GET /v1/bulk/{id}); each poll costs one
// rate-limit unit.
func (c *Client) BulkJob(ctx context.Context, id string) (*BulkJob, error) {
	const op = "bulk"
	if id == "" {
		return nil, &Error{Op: op, Class: ClassPermanent, Message: "empty bulk id"}
	}
	var out bulkEnvelope
	if err := c.do(ctx, op, http.MethodGet, "/v1/bulk/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return out.job(), nil
}

type bulkEnvelope struct {
	Data struct {
		ID         string            `json:"id"`
		Type       string            `json:"type"`
		Attributes map[string]any    `json:"attributes"`
		Links      map[string]string `json:"links"`
	} `json:"data"`
}

func (e bulkEnvelope) job() *BulkJob {
	d := e.Data
	j := &BulkJob{ID: d.ID, Type: d.Type, Attributes: d.Attributes, Links: d.Links}
	if s, ok := d.Attributes["status"].(string); ok {
		j.Status = s
	}
	done, _ := d.Attributes["completed"].(bool)
	j.Completed = done || j.Status == "complete" || j.Status == "completed"
	if ids, ok := d.Attributes["ids"].([]any); ok {
		for _, v := range ids {
			if s, ok := v.(string); ok {
				j.IDs = append(j.IDs, s)
			}
		}
	}
	return j
}
