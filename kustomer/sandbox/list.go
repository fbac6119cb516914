package sandbox

import (
	"net/http"
	"time"
)

// ListPath is where a served sandbox lists its customers: not a Kustomer
// route (Kustomer has no listing), so that a person trying the sandbox can
// see what a worker created. It spends no rate unit and needs no key.
const ListPath = "/_sandbox/customers"

// listedCustomer is one customer of ListPath's answer.
type listedCustomer struct {
	ID         string         `json:"id"`
	CreatedAt  time.Time      `json:"created_at"`
	Attributes map[string]any `json:"attributes"`
}

// serveList answers ListPath: {"count": N, "customers": [...]}, in
// creation order.
func (s *Sandbox) serveList(w http.ResponseWriter) {
	cs := s.Customers()
	out := struct {
		Count     int              `json:"count"`
		Customers []listedCustomer `json:"customers"`
	}{Count: len(cs), Customers: make([]listedCustomer, len(cs))}
	for i, c := range cs {
		out.Customers[i] = listedCustomer{ID: c.ID, CreatedAt: c.CreatedAt, Attributes: c.Attributes}
	}
	writeJSON(w, http.StatusOK, out)
}

// withList serves ListPath beside the sandbox's Kustomer routes.
func withList(sb *Sandbox, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == ListPath && r.Method == http.MethodGet {
			sb.serveList(w)
			return
		}
		h.ServeHTTP(w, r)
	})
}
