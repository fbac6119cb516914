package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

func (s *Sandbox) route(w http.ResponseWriter, r *http.Request) {
	path := r.URL.EscapedPath()
	switch {
	case path == "/v1/customers" && r.Method == http.MethodPost:
		s.create(w, r)
	case path == "/v1/customers/bulk" && r.Method == http.MethodPost:
		s.createBulk(w, r)
	case strings.HasPrefix(path, "/v1/customers/") && r.Method == http.MethodGet:
		s.lookup(w, strings.TrimPrefix(path, "/v1/customers/"))
	case strings.HasPrefix(path, "/v1/bulk/") && r.Method == http.MethodGet:
		s.bulkStatus(w, strings.TrimPrefix(path, "/v1/bulk/"))
	default:
		notFound(w)
	}
}

func notFound(w http.ResponseWriter) {
	writeAPIError(w, http.StatusNotFound, "notfound", "Not Found", nil)
}

// decodeBody reads a JSON body; numbers become float64, as in any JSON client.
func decodeBody(r *http.Request) (any, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBodySize))
	if err != nil {
		return nil, fmt.Errorf("sandbox: read body: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, errBadJSON
	}
	if dec.More() {
		return nil, errBadJSON
	}
	return v, nil
}

func (s *Sandbox) badRequest(w http.ResponseWriter, title string, vs []violation) {
	s.count(func(st *Stats) { st.BadRequests++ })
	writeAPIError(w, http.StatusBadRequest, "badparam", title, vs)
}

func (s *Sandbox) create(w http.ResponseWriter, r *http.Request) {
	v, err := decodeBody(r)
	if err != nil {
		s.badRequest(w, "Invalid JSON", []violation{{Title: "Invalid JSON", Detail: "the request body is not valid JSON"}})
		return
	}
	body, ok := v.(map[string]any)
	if !ok {
		s.badRequest(w, "Invalid body", []violation{{Title: "Invalid type", Detail: "expected object, got " + typeName(v)}})
		return
	}
	var c checker
	validateCustomer(&c, "", body, false)
	if len(c.errs) > 0 {
		s.badRequest(w, c.errs[0].Title, c.errs)
		return
	}

	s.mu.Lock()
	rec := s.store(body)
	hang := s.faults.TimeoutRate > 0 && s.rng.Float64() < s.faults.TimeoutRate
	if hang {
		s.stats.Timeouts++
	}
	s.mu.Unlock()

	if hang {
		s.hang(w, r)
		return
	}
	writeData(w, http.StatusCreated, rec.data)
}

// hang withholds the answer to a stored create until the client gives up,
// TimeoutHang passes (504) or the sandbox is closed (503).
func (s *Sandbox) hang(w http.ResponseWriter, r *http.Request) {
	t := time.NewTimer(s.timeoutHang)
	defer t.Stop()
	select {
	case <-r.Context().Done():
	case <-t.C:
		writeSimpleError(w, http.StatusGatewayTimeout, "gatewayTimeout", "Gateway Timeout")
	case <-s.closed:
		writeSimpleError(w, http.StatusServiceUnavailable, "serviceUnavailable", "Service Unavailable")
	}
}

// store creates a customer from a valid body. Callers hold s.mu.
func (s *Sandbox) store(body map[string]any) record {
	id := s.newID()
	now := s.now().UTC()
	attrs := make(map[string]any, len(body)+4)
	for k, v := range body {
		if k != "_clientRef" {
			attrs[k] = v
		}
	}
	if emails, ok := body["emails"].([]any); ok {
		withIDs := make([]any, len(emails))
		for i, e := range emails {
			item := map[string]any{"id": s.newID()}
			for k, v := range e.(map[string]any) {
				item[k] = v
			}
			withIDs[i] = item
		}
		attrs["emails"] = withIDs
	}
	attrs["displayName"] = displayName(body)
	stamp := now.Format("2006-01-02T15:04:05.000Z07:00")
	attrs["createdAt"] = stamp
	attrs["updatedAt"] = stamp

	data, _ := json.Marshal(map[string]any{ // only JSON values: cannot fail
		"type":       "customer",
		"id":         id,
		"attributes": attrs,
		"links":      map[string]string{"self": "/v1/customers/" + id},
	})
	rec := record{id: id, createdAt: now, data: data}
	i := len(s.customers)
	s.customers = append(s.customers, rec)
	s.stats.Creates++
	s.byID[id] = i
	if ext, ok := body["externalId"].(string); ok {
		if len(s.byExt[ext]) > 0 {
			s.stats.Duplicates++
		}
		s.byExt[ext] = append(s.byExt[ext], i)
	}
	for _, e := range items(body["emails"], "email") {
		if _, ok := s.byEmail[strings.ToLower(e)]; !ok {
			s.byEmail[strings.ToLower(e)] = i
		}
	}
	for _, p := range items(body["phones"], "phone") {
		if _, ok := s.byPhone[p]; !ok {
			s.byPhone[p] = i
		}
	}
	return rec
}

// displayName is what Kustomer shows: the name, else the first email, else
// the first phone.
func displayName(body map[string]any) string {
	if n, ok := body["name"].(string); ok && n != "" {
		return n
	}
	if e := items(body["emails"], "email"); len(e) > 0 {
		return e[0]
	}
	if p := items(body["phones"], "phone"); len(p) > 0 {
		return p[0]
	}
	return ""
}

// items returns the string field key of each object in an array value.
func items(v any, key string) []string {
	a, _ := v.([]any)
	var out []string
	for _, it := range a {
		if m, ok := it.(map[string]any); ok {
			if s, ok := m[key].(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func writeData(w http.ResponseWriter, status int, data []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"data":`))
	_, _ = w.Write(data)
	_, _ = w.Write([]byte("}\n"))
}

// lookup answers GET /v1/customers/{rest}: an id, or externalId=, email=,
// phone= followed by the escaped value.
func (s *Sandbox) lookup(w http.ResponseWriter, rest string) {
	field, value, hasEq := strings.Cut(rest, "=")
	if hasEq {
		v, err := url.PathUnescape(value)
		if err != nil {
			notFound(w)
			return
		}
		value = v
	}
	s.mu.Lock()
	i, found := -1, false
	switch {
	case !hasEq && !strings.Contains(rest, "/"):
		i, found = s.byID[rest]
	case field == "externalId":
		if idx := s.byExt[value]; len(idx) > 0 {
			i, found = idx[0], true
		}
	case field == "email":
		i, found = s.byEmail[strings.ToLower(value)]
	case field == "phone":
		i, found = s.byPhone[value]
	default:
		s.mu.Unlock()
		notFound(w)
		return
	}
	s.stats.Lookups++
	var data []byte
	if found {
		data = s.customers[i].data
	}
	s.mu.Unlock()
	if !found {
		notFound(w)
		return
	}
	writeData(w, http.StatusOK, data)
}
