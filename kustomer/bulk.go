package kustomer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ClientRefMax is the longest _clientRef the client sends, in characters.
const ClientRefMax = 255

// BulkItem is one customer of a bulk request.
type BulkItem struct {
	// Ref, when set, is sent as the item's "_clientRef", and Kustomer reports
	// the item's outcome under it. Either every item of a request has a Ref,
	// unique and at most [ClientRefMax] characters, or none has; without
	// them, results are matched by position.
	Ref string
	// Body is the customer, as for [Client.CreateCustomer]: marshalled to
	// JSON, or a [json.RawMessage] or []byte sent as is. It must be a JSON
	// object and must not hold "_clientRef" itself.
	Body any
}

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

// CreateCustomersBulk submits 1 to [BulkMax] customers in one request
// (POST /v1/customers/bulk), which costs one rate-limit unit. Kustomer runs
// the job asynchronously: the answer is usually a queued job; follow it with
// [Client.BulkJob] or [Client.BulkResults] (each call costs a unit too).
//
// Items are checked before anything is sent (count, refs, bodies that are
// not JSON objects): such a request fails permanently without a request.
// Kustomer rejects a request whole (400) when it cannot report on its items
// one by one; a gateway may also reject it for one invalid item, in which
// case [BulkRejectedItem] says which. Like a single create, a bulk request
// has no idempotency key: after an error with [Error.Timeout] the job may
// exist; look the customers up by externalId before sending them again.
func (c *Client) CreateCustomersBulk(ctx context.Context, items []BulkItem) (*BulkJob, error) {
	const op = "bulk"
	if len(items) == 0 || len(items) > BulkMax {
		return nil, &Error{Op: op, Class: ClassPermanent, Message: fmt.Sprintf("bulk needs 1 to %d customers, got %d", BulkMax, len(items))}
	}
	if err := checkRefs(items); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, it := range items {
		raw, err := marshalBody(op, it.Body)
		if err != nil {
			return nil, err
		}
		raw = bytes.TrimSpace(raw)
		if len(raw) < 2 || raw[0] != '{' {
			return nil, &Error{Op: op, Class: ClassPermanent, Pointer: "/" + strconv.Itoa(i), Message: fmt.Sprintf("item %d is not a JSON object", i)}
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		if it.Ref == "" {
			buf.Write(raw)
			continue
		}
		ref, _ := json.Marshal(it.Ref) // a string: cannot fail
		buf.WriteString(`{"_clientRef":`)
		buf.Write(ref)
		if rest := bytes.TrimSpace(raw[1:]); len(rest) > 0 && rest[0] != '}' {
			buf.WriteByte(',')
		}
		buf.Write(raw[1:])
	}
	buf.WriteByte(']')
	var out bulkEnvelope
	if err := c.do(ctx, op, http.MethodPost, "/v1/customers/bulk", buf.Bytes(), &out); err != nil {
		return nil, err
	}
	if out.Data.ID == "" {
		return nil, c.foreign(op, http.MethodPost, "/v1/customers/bulk", http.StatusCreated, "no bulk id in the answer")
	}
	return out.job(), nil
}

func checkRefs(items []BulkItem) error {
	withRef := 0
	seen := make(map[string]int, len(items))
	for i, it := range items {
		if it.Ref == "" {
			continue
		}
		withRef++
		ptr := "/" + strconv.Itoa(i) + "/_clientRef"
		if utf8.RuneCountInString(it.Ref) > ClientRefMax {
			return &Error{Op: "bulk", Class: ClassPermanent, Pointer: ptr, Message: fmt.Sprintf("item %d: Ref is longer than %d characters", i, ClientRefMax)}
		}
		if j, dup := seen[it.Ref]; dup {
			return &Error{Op: "bulk", Class: ClassPermanent, Pointer: ptr, Message: fmt.Sprintf("items %d and %d have the same Ref", j, i)}
		}
		seen[it.Ref] = i
	}
	if withRef != 0 && withRef != len(items) {
		return &Error{Op: "bulk", Class: ClassPermanent, Message: fmt.Sprintf("%d of %d items have a Ref: either all or none must", withRef, len(items))}
	}
	return nil
}

// BulkRejectedItem reports which item made Kustomer reject a whole bulk
// request, when its 400 points at one ("/3/emails/0/email" is item 3), so the
// caller can send the others without it.
func BulkRejectedItem(err error) (index int, ok bool) {
	var ke *Error
	if !errors.As(err, &ke) || ke.Op != "bulk" || ke.Class != ClassPermanent || !strings.HasPrefix(ke.Pointer, "/") {
		return 0, false
	}
	seg, _, _ := strings.Cut(ke.Pointer[1:], "/")
	n, convErr := strconv.Atoi(seg)
	if convErr != nil || n < 0 || n >= BulkMax {
		return 0, false
	}
	return n, true
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
	j.Status, j.Completed = statusOf(d.Attributes)
	j.IDs = stringsOf(d.Attributes["ids"])
	return j
}

// statusOf reads "status" and "completed" from job or batch attributes.
func statusOf(attrs map[string]any) (status string, completed bool) {
	status, _ = attrs["status"].(string)
	completed, _ = attrs["completed"].(bool)
	s := strings.ToLower(status)
	return status, completed || s == "complete" || s == "completed"
}

func stringsOf(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// BulkResults is what GET /v1/bulk/{id}/batches reports, every batch
// together. Kustomer's spec does not describe this endpoint, so it is parsed
// leniently: unknown fields are ignored, missing ones are zero.
type BulkResults struct {
	JobID string
	// Status is the first batch's status, if any reports one.
	Status string
	// Completed is true when at least one batch reports it is complete and
	// none reports otherwise. When batches carry no status, the counts say
	// it: see [BulkResults.CompleteFor].
	Completed    bool
	SuccessCount int      // sum of the batches' successCount
	FailureCount int      // sum of the batches' failureCount
	ObjectIDs    []string // created customer ids, in the order reported
	Results      []BulkResult
}

// BulkResult is the outcome of one item, as reported or as matched by
// [BulkResults.Outcomes].
type BulkResult struct {
	Ref        string // the item's _clientRef; "" when none was sent
	CustomerID string // the customer created; "" on failure
	// Err is nil when the customer was created. Otherwise it is an *Error
	// classified as a single create's would be: a 400 permanent, a 429 or
	// 5xx retryable, a 401 or 403 systemic, a failure without a status
	// permanent. An item Kustomer reported nothing about is retryable with
	// [Error.Timeout] set: its outcome is unknown.
	Err error
}

// BulkResults reads the per-item outcomes of a bulk job
// (GET /v1/bulk/{id}/batches), in one request: one rate-limit unit. Before
// the job completes they are usually empty; match them to the submitted
// items with [BulkResults.Outcomes].
func (c *Client) BulkResults(ctx context.Context, id string) (*BulkResults, error) {
	const op = "bulk"
	if id == "" {
		return nil, &Error{Op: op, Class: ClassPermanent, Message: "empty bulk id"}
	}
	var out struct {
		Data json.RawMessage `json:"data"`
	}
	path := "/v1/bulk/" + url.PathEscape(id) + "/batches"
	if err := c.do(ctx, op, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	var batches []batchData
	if err := json.Unmarshal(out.Data, &batches); err != nil {
		var one batchData // a single batch instead of a list
		if err := json.Unmarshal(out.Data, &one); err != nil {
			return nil, c.foreign(op, http.MethodGet, path, http.StatusOK, "no batches in the answer")
		}
		batches = []batchData{one}
	}
	r := &BulkResults{JobID: id}
	anyDone, anyOpen := false, false
	for _, b := range batches {
		a := b.Attributes
		status, done := statusOf(a)
		if r.Status == "" {
			r.Status = status
		}
		switch {
		case done:
			anyDone = true
		case status != "":
			anyOpen = true
		}
		r.SuccessCount += intOf(a["successCount"])
		r.FailureCount += intOf(a["failureCount"])
		r.ObjectIDs = append(r.ObjectIDs, stringsOf(a["objectIds"])...)
		list, _ := a["results"].([]any)
		for _, v := range list {
			if m, ok := v.(map[string]any); ok {
				r.Results = append(r.Results, c.itemResult(m))
			}
		}
	}
	r.Completed = anyDone && !anyOpen
	return r, nil
}

// CompleteFor decides whether the job is complete for a request of n items
// from what the API documents, and records it in Completed: a batch reports
// the job complete (when batches carry a status), or the batches' counts
// (successCount + failureCount) cover all n items (they carry no status). An
// empty list of batches is never complete: the job is not done yet.
func (r *BulkResults) CompleteFor(n int) bool {
	if !r.Completed && n > 0 && r.SuccessCount+r.FailureCount >= n {
		r.Completed = true
	}
	return r.Completed
}

type batchData struct {
	Attributes map[string]any `json:"attributes"`
}

func intOf(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// itemResult reads one entry of results[]: the reference, the created id, or
// the error in either of Kustomer's shapes ("errors": [...] or "error": {...},
// with the HTTP status as "statusCode", a numeric "status" or the error's own
// "status").
func (c *Client) itemResult(m map[string]any) BulkResult {
	res := BulkResult{}
	res.Ref, _ = m["_clientRef"].(string)
	id, _ := m["objectId"].(string)
	if id == "" {
		id, _ = m["id"].(string)
	}
	var errs []any
	switch e := m["errors"].(type) {
	case []any:
		errs = e
	case map[string]any:
		errs = []any{e}
	}
	if e, ok := m["error"].(map[string]any); ok {
		errs = append(errs, e)
	} else if s, ok := m["error"].(string); ok && s != "" {
		errs = append(errs, map[string]any{"message": s})
	}
	word, _ := m["status"].(string)
	failedWord := strings.EqualFold(word, "failed") || strings.EqualFold(word, "error")
	if id != "" && len(errs) == 0 && !failedWord {
		res.CustomerID = id
		return res
	}
	code := intOf(m["statusCode"])
	if code == 0 {
		code = intOf(m["status"])
	}
	if code == 0 && len(errs) > 0 {
		if first, ok := errs[0].(map[string]any); ok {
			code = intOf(first["status"])
			if code == 0 {
				code, _ = strconv.Atoi(fmt.Sprint(first["status"]))
			}
		}
	}
	e := &Error{Op: "bulk", StatusCode: code, Class: itemClass(code)}
	body, _ := json.Marshal(map[string]any{"errors": errs}) // decoded JSON: cannot fail
	parseErrorBody(e, body)
	if len(errs) == 0 {
		e.Message = "the item failed without a reason"
		if code != 0 {
			e.Message = "the item failed: " + statusText(code)
		}
	}
	e.Message, e.Code, e.Pointer = c.scrub(e.Message), c.scrub(e.Code), c.scrub(e.Pointer)
	res.Err = e
	return res
}

// itemClass classifies an item's failure as [Client.CreateCustomer] would
// classify a response with that status.
func itemClass(code int) Class {
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return ClassSystemic
	case code == http.StatusTooManyRequests || code >= 500:
		return ClassRetryable
	default:
		return ClassPermanent
	}
}

// Outcomes matches the reported results to the items submitted: refs[i] is
// the Ref of item i, in submission order (all "" when none were sent; then
// results are matched by position). It returns one BulkResult per item. An
// item with no result (the job is not complete, or Kustomer left it out) gets
// a retryable error with [Error.Timeout] set: its outcome is unknown.
func (r *BulkResults) Outcomes(refs []string) []BulkResult { return r.outcomes(refs, true) }

// OutcomesByRef is Outcomes for items that are not the job's whole list in
// submission order (some of a job's items, asked about later): results are
// matched only through their refs, never by position, and an item whose
// ref no result carries has an unknown outcome.
func (r *BulkResults) OutcomesByRef(refs []string) []BulkResult { return r.outcomes(refs, false) }

func (r *BulkResults) outcomes(refs []string, byPosition bool) []BulkResult {
	out := make([]BulkResult, len(refs))
	byRef := make(map[string]BulkResult, len(r.Results))
	for _, res := range r.Results {
		if res.Ref != "" {
			byRef[res.Ref] = res
		}
	}
	positional := len(byRef) == 0
	for i, ref := range refs {
		var res BulkResult
		var ok bool
		switch {
		case ref != "" && !positional:
			res, ok = byRef[ref]
		case !byPosition:
		case len(r.Results) == len(refs):
			res, ok = r.Results[i], true
		case len(r.Results) == 0 && r.Completed && r.FailureCount == 0 && len(r.ObjectIDs) == len(refs):
			// The spec's shape: ids only, in submission order.
			res, ok = BulkResult{CustomerID: r.ObjectIDs[i]}, true
		}
		if !ok {
			msg := "bulk job " + r.JobID + " reported no result for this item"
			if !r.Completed {
				msg = "bulk job " + r.JobID + " is not complete"
			}
			res = BulkResult{Err: &Error{Op: "bulk", Class: ClassRetryable, Timeout: true, Message: msg}}
		}
		res.Ref = ref
		out[i] = res
	}
	return out
}
