package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
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
	case strings.HasPrefix(path, "/v1/customers/") && r.Method == http.MethodPut:
		s.update(w, r, strings.TrimPrefix(path, "/v1/customers/"))
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

// customerBody reads a request's customer object and checks it against the
// closed create schema, answering 400 itself when it is not one.
func (s *Sandbox) customerBody(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	v, err := decodeBody(r)
	if err != nil {
		s.badRequest(w, "Invalid JSON", []violation{{Title: "Invalid JSON", Detail: "the request body is not valid JSON"}})
		return nil, false
	}
	body, ok := v.(map[string]any)
	if !ok {
		s.badRequest(w, "Invalid body", []violation{{Title: "Invalid type", Detail: "expected object, got " + typeName(v)}})
		return nil, false
	}
	var c checker
	validateCustomer(&c, "", body, false)
	if len(c.errs) > 0 {
		s.badRequest(w, c.errs[0].Title, c.errs)
		return nil, false
	}
	return body, true
}

func (s *Sandbox) create(w http.ResponseWriter, r *http.Request) {
	body, ok := s.customerBody(w, r)
	if !ok {
		return
	}

	s.mu.Lock()
	rec := s.store(body, s.now())
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

// store creates a customer from a valid body at time at. Callers hold s.mu.
func (s *Sandbox) store(body map[string]any, at time.Time) record {
	id := s.newID()
	at = at.UTC()
	attrs := make(map[string]any, len(body)+4)
	s.setAttributes(attrs, body)
	stamp := at.Format(stampLayout)
	attrs["createdAt"] = stamp
	attrs["updatedAt"] = stamp
	attrs["displayName"] = displayName(attrs)

	i := len(s.customers)
	rec := record{id: id, createdAt: at, data: customerData(id, attrs)}
	s.customers = append(s.customers, rec)
	s.stats.Creates++
	s.byID[id] = i
	if ext, ok := body["externalId"].(string); ok && len(s.byExt[ext]) > 0 {
		s.stats.Duplicates++
	}
	s.index(i, attrs, true)
	return rec
}

const stampLayout = "2006-01-02T15:04:05.000Z07:00"

// setAttributes copies the fields of a valid body into attrs, as Kustomer
// answers them: _clientRef dropped, every email given an id.
func (s *Sandbox) setAttributes(attrs, body map[string]any) {
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
}

func customerData(id string, attrs map[string]any) []byte {
	data, _ := json.Marshal(map[string]any{ // only JSON values: cannot fail
		"type":       "customer",
		"id":         id,
		"attributes": attrs,
		"links":      map[string]string{"self": "/v1/customers/" + id},
	})
	return data
}

// index adds customer i under the externalId, emails and phones of attrs
// (add), or removes it from them. Callers hold s.mu.
func (s *Sandbox) index(i int, attrs map[string]any, add bool) {
	op := indexRemove
	if add {
		op = indexAdd
	}
	if ext, ok := attrs["externalId"].(string); ok {
		had := len(s.byExt[ext]) > 0
		op(s.byExt, ext, i)
		switch has := len(s.byExt[ext]) > 0; {
		case has && !had:
			s.stats.ExternalIDs++
		case had && !has:
			s.stats.ExternalIDs--
		}
	}
	for _, e := range items(attrs["emails"], "email") {
		op(s.byEmail, strings.ToLower(e), i)
	}
	for _, p := range items(attrs["phones"], "phone") {
		op(s.byPhone, p, i)
	}
}

// indexAdd inserts i into m[key], kept in ascending (creation) order.
func indexAdd(m map[string][]int, key string, i int) {
	list := m[key]
	at, found := slices.BinarySearch(list, i)
	if !found {
		m[key] = slices.Insert(list, at, i)
	}
}

func indexRemove(m map[string][]int, key string, i int) {
	list := m[key]
	if at, found := slices.BinarySearch(list, i); found {
		m[key] = slices.Delete(list, at, at+1)
	}
}

// displayName is what Kustomer shows: the name, else the first email, else
// the first phone.
func displayName(attrs map[string]any) string {
	if n, ok := attrs["name"].(string); ok && n != "" {
		return n
	}
	if e := items(attrs["emails"], "email"); len(e) > 0 {
		return e[0]
	}
	if p := items(attrs["phones"], "phone"); len(p) > 0 {
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
// phone= followed by the escaped value. A key several customers share finds
// the oldest of them.
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
	var found []int
	switch {
	case !hasEq && !strings.Contains(rest, "/"):
		if i, ok := s.byID[rest]; ok {
			found = []int{i}
		}
	case field == "externalId":
		found = s.byExt[value]
		s.stats.LookupsByExternalID++
	case field == "email":
		found = s.byEmail[strings.ToLower(value)]
		s.stats.LookupsByEmail++
	case field == "phone":
		found = s.byPhone[value]
		s.stats.LookupsByPhone++
	default:
		s.mu.Unlock()
		notFound(w)
		return
	}
	s.stats.Lookups++
	var data []byte
	if len(found) > 0 {
		data = s.customers[found[0]].data
	}
	s.mu.Unlock()
	if data == nil {
		notFound(w)
		return
	}
	writeData(w, http.StatusOK, data)
}

// update answers PUT /v1/customers/{id}: the body is checked against the
// closed create schema. With ?replace=false the fields sent replace the
// customer's (arrays such as emails and phones whole, as sent; custom
// attributes key by key) and the fields not sent are kept. Without
// replace=false the body replaces every field the customer had: Kustomer
// does not document that case, and reading it so makes a caller that forgets
// replace=false lose data in tests rather than in production.
func (s *Sandbox) update(w http.ResponseWriter, r *http.Request, id string) {
	if strings.ContainsAny(id, "=/") {
		notFound(w)
		return
	}
	body, ok := s.customerBody(w, r)
	if !ok {
		return
	}
	merge := r.URL.Query().Get("replace") == "false"

	s.mu.Lock()
	i, found := s.byID[id]
	if !found {
		s.mu.Unlock()
		notFound(w)
		return
	}
	rec := &s.customers[i]
	var old struct {
		Attributes map[string]any `json:"attributes"`
	}
	_ = json.Unmarshal(rec.data, &old) // written by us; cannot fail
	attrs := map[string]any{"createdAt": old.Attributes["createdAt"]}
	if merge {
		attrs = maps.Clone(old.Attributes)
		if oldCustom, ok := old.Attributes["custom"].(map[string]any); ok {
			if newCustom, ok := body["custom"].(map[string]any); ok {
				merged := maps.Clone(oldCustom)
				maps.Copy(merged, newCustom)
				body = maps.Clone(body)
				body["custom"] = merged
			}
		}
	}
	s.setAttributes(attrs, body)
	attrs["updatedAt"] = s.now().UTC().Format(stampLayout)
	attrs["displayName"] = displayName(attrs)
	s.index(i, old.Attributes, false)
	s.index(i, attrs, true)
	rec.data = customerData(id, attrs)
	data := rec.data
	s.stats.Updates++
	s.mu.Unlock()
	writeData(w, http.StatusOK, data)
}
