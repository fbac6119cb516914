package sandbox

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const maxBulkItems = 100

// bulkJob is a finished bulk create: the sandbox runs bulks synchronously and
// reports them complete at once, which Kustomer's spec allows.
type bulkJob struct {
	id         string
	createdAt  time.Time
	ids        []string
	clientRefs []string // parallel to ids; nil when not used
}

// createBulk answers POST /v1/customers/bulk: 1 to 100 customers, each
// validated like a single create; any invalid item rejects the whole request.
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
	var c checker
	bodies := make([]map[string]any, len(list))
	withRef, refs := 0, make(map[string]bool)
	for i, it := range list {
		ptr := "/" + strconv.Itoa(i)
		m, ok := it.(map[string]any)
		if !ok {
			c.add(ptr, "Invalid type", "expected object, got "+typeName(it))
			continue
		}
		bodies[i] = m
		validateCustomer(&c, ptr, m, true)
		if ref, ok := m["_clientRef"].(string); ok {
			withRef++
			if refs[ref] {
				c.add(ptr+"/_clientRef", "Duplicate _clientRef", fmt.Sprintf("_clientRef %q is used twice", ref))
			}
			refs[ref] = true
		} else if _, present := m["_clientRef"]; present {
			withRef++
		}
	}
	if withRef != 0 && withRef != len(list) {
		c.add("", "Mixed _clientRef", "either every item has a _clientRef or none has")
	}
	if len(c.errs) > 0 {
		s.badRequest(w, c.errs[0].Title, c.errs)
		return
	}

	s.mu.Lock()
	job := &bulkJob{id: s.newID(), createdAt: s.now().UTC()}
	for _, b := range bodies {
		rec := s.store(b)
		job.ids = append(job.ids, rec.id)
		if withRef > 0 {
			job.clientRefs = append(job.clientRefs, b["_clientRef"].(string))
		}
	}
	s.bulks[job.id] = job
	s.mu.Unlock()

	writeJSON(w, http.StatusCreated, map[string]any{"data": job.data()})
}

// bulkStatus answers GET /v1/bulk/{id} and GET /v1/bulk/{id}/batches.
func (s *Sandbox) bulkStatus(w http.ResponseWriter, rest string) {
	id, sub, _ := strings.Cut(rest, "/")
	s.mu.Lock()
	job, ok := s.bulks[id]
	s.mu.Unlock()
	switch {
	case !ok || (sub != "" && sub != "batches"):
		notFound(w)
	case sub == "":
		writeJSON(w, http.StatusOK, map[string]any{"data": job.data()})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"data": []any{job.batch()}})
	}
}

func (j *bulkJob) data() map[string]any {
	stamp := j.createdAt.Format("2006-01-02T15:04:05.000Z07:00")
	return map[string]any{
		"type": "bulk",
		"id":   j.id,
		"attributes": map[string]any{
			"status":    "complete",
			"completed": true,
			"ids":       j.ids,
			"count":     len(j.ids),
			"createdAt": stamp,
			"updatedAt": stamp,
		},
		"links": map[string]string{"self": "/v1/bulk/" + j.id},
	}
}

func (j *bulkJob) batch() map[string]any {
	attrs := map[string]any{
		"objectIds":    j.ids,
		"successCount": len(j.ids),
		"failureCount": 0,
		"errors":       []any{},
	}
	if j.clientRefs != nil {
		results := make([]map[string]any, len(j.ids))
		for i, id := range j.ids {
			results[i] = map[string]any{"_clientRef": j.clientRefs[i], "objectId": id, "status": "created"}
		}
		attrs["results"] = results
	}
	return map[string]any{"type": "bulk_batch", "id": j.id, "attributes": attrs}
}
