package sandbox

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

const maxBulkItems = 100

// Bulk, after Kustomer's OpenAPI spec (POST /v1/customers/bulk: an array of at
// most 100 customers, each the closed create schema) and its newer
// bulk-operations guide (the job is asynchronous: poll GET /v1/bulk/{id},
// queued → running → complete, then read GET /v1/bulk/{id}/batches for
// objectIds, successCount, failureCount, errors and results[] matched by
// _clientRef).
//
// Rejected whole, with 400 and nothing queued, is a request whose shape
// leaves no item to report on or no way to match results back: a body that
// is not JSON or not an array, an empty array or one of more than 100 items,
// an item that is not an object, and a _clientRef that is not a non-empty
// string of at most 255 characters, is repeated, or is on some items only.
// An item that breaks the customer schema fails alone, in the job's results,
// with the 400 error a single create of it would get (pointers relative to
// the item); the other items are created. Config.BulkRejectInvalid switches
// to the other reading of the spec (the gateway validates the whole array
// and rejects the request, pointers "/<index>/…").
//
// The submission answers 201 with the job, status "queued", and spends one
// rate unit like every request; so does every poll.

// bulkJob is one submitted bulk request.
type bulkJob struct {
	id        string
	submitted time.Time
	start     time.Time // when it stops being queued and runs
	due       time.Time // when it completes, unless stuck
	stuck     bool
	done      bool
	withRefs  bool
	items     []bulkItem
}

type bulkItem struct {
	ref    string
	body   map[string]any // valid body, dropped once created
	errs   []violation    // schema violations: the item fails with 400
	failed bool           // an injected transient failure
	id     string         // the customer created, once done
}

func (it *bulkItem) ok() bool { return it.id != "" }

// createBulk answers POST /v1/customers/bulk.
func (s *Sandbox) createBulk(w http.ResponseWriter, r *http.Request) {
	v, err := decodeBody(r)
	if err != nil {
		s.badRequest(w, "Invalid JSON", []violation{{Title: "Invalid JSON", Detail: "the request body is not valid JSON"}})
		return
	}
	list, ok := v.([]any)
	if !ok || len(list) == 0 || len(list) > maxBulkItems {
		s.badRequest(w, "Invalid body", []violation{{Title: "Invalid body", Detail: fmt.Sprintf("expected an array of 1 to %d customers", maxBulkItems)}})
		return
	}
	faults := s.Faults()
	var whole checker
	items := make([]bulkItem, len(list))
	withRef, refs := 0, make(map[string]bool)
	for i, it := range list {
		ptr := "/" + strconv.Itoa(i)
		m, ok := it.(map[string]any)
		if !ok {
			whole.add(ptr, "Invalid type", "expected object, got "+typeName(it))
			continue
		}
		var c checker
		validateCustomer(&c, "", m, true)
		for _, v := range c.errs {
			if v.Pointer == "/_clientRef" || faults.BulkRejectInvalid {
				v.Pointer = ptr + v.Pointer
				whole.errs = append(whole.errs, v)
			} else {
				items[i].errs = append(items[i].errs, v)
			}
		}
		if items[i].errs == nil {
			items[i].body = m
		}
		if _, present := m["_clientRef"]; present {
			withRef++
			ref, _ := m["_clientRef"].(string)
			if refs[ref] {
				whole.add(ptr+"/_clientRef", "Duplicate _clientRef", fmt.Sprintf("_clientRef %q is used twice", ref))
			}
			refs[ref] = true
			items[i].ref = ref
		}
	}
	if withRef != 0 && withRef != len(list) {
		whole.add("", "Mixed _clientRef", "either every item has a _clientRef or none has")
	}
	if len(whole.errs) > 0 {
		s.badRequest(w, whole.errs[0].Title, whole.errs)
		return
	}

	s.mu.Lock()
	f := s.faults
	if f.BulkSubmitErrorRate > 0 && s.rng.Float64() < f.BulkSubmitErrorRate {
		s.stats.ServerErrors++
		s.mu.Unlock()
		writeSimpleError(w, http.StatusServiceUnavailable, "serviceUnavailable", "Service Unavailable")
		return
	}
	now := s.now()
	job := &bulkJob{id: s.newID(), submitted: now, withRefs: withRef > 0, items: items}
	s.schedule(job, f)
	for i := range job.items {
		if job.items[i].body != nil && f.BulkItemFailureRate > 0 && s.rng.Float64() < f.BulkItemFailureRate {
			job.items[i].failed = true
		}
	}
	job.stuck = f.BulkStuckRate > 0 && s.rng.Float64() < f.BulkStuckRate
	if job.stuck {
		s.stats.BulkStuck++
	} else {
		s.pending = append(s.pending, job)
	}
	s.bulks[job.id] = job
	s.stats.BulkJobs++
	hang := f.TimeoutRate > 0 && s.rng.Float64() < f.TimeoutRate
	if hang {
		s.stats.Timeouts++
	}
	lost := !hang && f.BulkSubmitLostRate > 0 && s.rng.Float64() < f.BulkSubmitLostRate
	if lost {
		s.stats.BulkLost++
	}
	data := job.data(now)
	s.mu.Unlock()

	if hang || lost {
		s.hang(w, r)
		return
	}
	if f.BulkSubmitLate > 0 {
		t := time.NewTimer(f.BulkSubmitLate)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client gave up: the job runs, its answer is lost
		case <-s.closed:
			t.Stop()
		}
	}
	writeJSON(w, http.StatusCreated, map[string]any{"data": data})
}

// schedule sets when job starts running and when it completes, after the
// timing model of f. Callers hold s.mu.
func (s *Sandbox) schedule(job *bulkJob, f Faults) {
	now := job.submitted
	switch f.BulkTiming {
	case BulkSerial:
		job.start = now
		if s.serialFree.After(now) {
			job.start = s.serialFree
		}
		job.due = job.start.Add(f.BulkDelay)
		s.serialFree = job.due
		return
	case BulkSpread:
		d := f.BulkDelayMin
		if spread := f.BulkDelay - f.BulkDelayMin; spread > 0 {
			d += time.Duration(s.rng.Int64N(int64(spread) + 1))
		}
		job.due = now.Add(d)
	default:
		job.due = now.Add(f.BulkDelay)
	}
	// Queued for the first half, running for the second.
	job.start = now.Add(job.due.Sub(now) / 2)
}

// settle carries out every pending job due by now, oldest due first: its
// valid items become customers created at the job's due time. Callers hold
// s.mu.
func (s *Sandbox) settle(now time.Time) {
	isDue := func(j *bulkJob) bool { return now.After(j.submitted) && !now.Before(j.due) }
	if !slices.ContainsFunc(s.pending, isDue) {
		return // the common case, on every request: nothing to allocate
	}
	var due, later []*bulkJob
	for _, j := range s.pending {
		if isDue(j) {
			due = append(due, j)
		} else {
			later = append(later, j)
		}
	}
	if len(due) == 0 {
		return
	}
	s.pending = later
	// Jobs submitted with different delays can fall due out of order.
	for len(due) > 0 {
		first := 0
		for i, j := range due {
			if j.due.Before(due[first].due) {
				first = i
			}
		}
		j := due[first]
		due = append(due[:first], due[first+1:]...)
		for i := range j.items {
			it := &j.items[i]
			if it.body != nil && !it.failed {
				it.id = s.store(it.body, j.due).id
			} else {
				s.stats.BulkItemsFailed++
			}
			it.body = nil
		}
		j.done = true
	}
}

// bulkStatus answers GET /v1/bulk/{id} and GET /v1/bulk/{id}/batches.
func (s *Sandbox) bulkStatus(w http.ResponseWriter, rest string) {
	id, sub, _ := strings.Cut(rest, "/")
	s.mu.Lock()
	job, ok := s.bulks[id]
	s.stats.BulkPolls++
	now := s.now()
	f := s.faults
	var data any
	switch {
	case !ok || (sub != "" && sub != "batches"):
	case sub == "":
		data = job.data(now)
	case f.BulkBatchesEmptyUntilDone && !job.done:
		data = []any{}
	default:
		b := job.batch(now)
		if f.BulkBatchesNoStatus {
			attrs := b["attributes"].(map[string]any)
			delete(attrs, "status")
			delete(attrs, "completed")
		}
		data = []any{b}
	}
	s.mu.Unlock()
	if data == nil {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data})
}

func (j *bulkJob) status(now time.Time) string {
	switch {
	case j.done:
		return "complete"
	case !now.After(j.submitted) || now.Before(j.start):
		return "queued"
	default:
		return "running"
	}
}

// updatedAt is when the job last changed status.
func (j *bulkJob) updatedAt(now time.Time) time.Time {
	switch j.status(now) {
	case "complete":
		return j.due
	case "running":
		return j.start
	default:
		return j.submitted
	}
}

func (j *bulkJob) counts() (ids []string, failures int) {
	ids = []string{}
	if !j.done {
		return ids, 0
	}
	for _, it := range j.items {
		if it.ok() {
			ids = append(ids, it.id)
		} else {
			failures++
		}
	}
	return ids, failures
}

func (j *bulkJob) data(now time.Time) map[string]any {
	ids, failures := j.counts()
	return map[string]any{
		"type": "bulk",
		"id":   j.id,
		"attributes": map[string]any{
			"status":       j.status(now),
			"completed":    j.done,
			"ids":          ids,
			"count":        len(j.items),
			"successCount": len(ids),
			"failureCount": failures,
			"createdAt":    j.submitted.UTC().Format(stampLayout),
			"updatedAt":    j.updatedAt(now).UTC().Format(stampLayout),
		},
		"links": map[string]string{"self": "/v1/bulk/" + j.id},
	}
}

// batch is the job's one batch (a job holds at most 100 items). Results are
// in submission order; each carries its _clientRef when the request gave
// them, and a failed one its errors in the JSON:API shape (schema
// violations, as a single create would get them) or the simple shape with a
// statusCode (transient failures).
func (j *bulkJob) batch(now time.Time) map[string]any {
	ids, failures := j.counts()
	results := []map[string]any{}
	errs := []map[string]any{}
	if j.done {
		for _, it := range j.items {
			res := map[string]any{}
			if j.withRefs {
				res["_clientRef"] = it.ref
			}
			switch {
			case it.ok():
				res["status"] = "created"
				res["objectId"] = it.id
			case it.errs != nil:
				res["status"] = "failed"
				res["statusCode"] = http.StatusBadRequest
				res["errors"] = apiErrors(http.StatusBadRequest, "badparam", it.errs[0].Title, it.errs)
			default:
				res["status"] = "failed"
				res["statusCode"] = http.StatusServiceUnavailable
				res["errors"] = []map[string]any{{"code": "serviceUnavailable", "message": "Service Unavailable: the item was not processed"}}
			}
			if e, ok := res["errors"].([]map[string]any); ok {
				first := map[string]any{"index": len(results)}
				for k, v := range e[0] {
					first[k] = v
				}
				if j.withRefs {
					first["_clientRef"] = it.ref
				}
				errs = append(errs, first)
			}
			results = append(results, res)
		}
	}
	return map[string]any{
		"type": "bulk_batch",
		"id":   j.id,
		"attributes": map[string]any{
			"status":       j.status(now),
			"completed":    j.done,
			"objectIds":    ids,
			"successCount": len(ids),
			"failureCount": failures,
			"errors":       errs,
			"results":      results,
		},
	}
}

// Job models: named sets of the bulk settings, each a way Kustomer's bulk
// jobs may behave within what the API promises. `kustomer-sync sandbox
// --job-model` and `kustomer-sync bench --mode bulk --job-model` take them.
const (
	JobModelParallel = "parallel"      // every job at once, for BulkDelay
	JobModelSerial   = "serial"        // jobs one after another, each BulkDelay
	JobModelSpread   = "spread"        // every job at once, each for 2 s to BulkDelay
	JobModelNoStatus = "no-status"     // parallel; /batches without status or completed
	JobModelEmpty    = "empty-batches" // parallel; /batches an empty list until done, without status
	JobModelLost     = "lost-answers"  // parallel; 1 submission in 100 queued with its answer lost
	JobModelLate     = "late-answers"  // parallel; every submission answered 3 s late
)

// JobModels lists the job models, in the order a benchmark runs them.
var JobModels = []string{JobModelParallel, JobModelSerial, JobModelSpread, JobModelNoStatus, JobModelEmpty, JobModelLost, JobModelLate}

// Settings of the job models.
const (
	jobModelSpreadMin = 2 * time.Second
	jobModelLostRate  = 0.01
	jobModelLate      = 3 * time.Second
)

// SetJobModel sets the bulk settings of job model name (one of
// [JobModels]) on c, keeping its BulkDelay and every other field.
func (c *Config) SetJobModel(name string) error {
	f := c.faults()
	if err := f.SetJobModel(name); err != nil {
		return err
	}
	c.BulkTiming, c.BulkDelayMin, c.BulkBatchesNoStatus = f.BulkTiming, f.BulkDelayMin, f.BulkBatchesNoStatus
	c.BulkBatchesEmptyUntilDone, c.BulkSubmitLostRate, c.BulkSubmitLate = f.BulkBatchesEmptyUntilDone, f.BulkSubmitLostRate, f.BulkSubmitLate
	return nil
}

// SetJobModel is [Config.SetJobModel] for the faults in force.
func (f *Faults) SetJobModel(name string) error {
	f.BulkTiming, f.BulkDelayMin, f.BulkBatchesNoStatus = BulkParallel, 0, false
	f.BulkBatchesEmptyUntilDone, f.BulkSubmitLostRate, f.BulkSubmitLate = false, 0, 0
	switch name {
	case JobModelParallel:
	case JobModelSerial:
		f.BulkTiming = BulkSerial
	case JobModelSpread:
		f.BulkTiming, f.BulkDelayMin = BulkSpread, min(jobModelSpreadMin, f.BulkDelay)
	case JobModelNoStatus:
		f.BulkBatchesNoStatus = true
	case JobModelEmpty:
		f.BulkBatchesNoStatus, f.BulkBatchesEmptyUntilDone = true, true
	case JobModelLost:
		f.BulkSubmitLostRate = jobModelLostRate
	case JobModelLate:
		f.BulkSubmitLate = jobModelLate
	default:
		return fmt.Errorf("sandbox: job model %q: want one of %s", name, strings.Join(JobModels, ", "))
	}
	return nil
}
