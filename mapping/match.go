package mapping

import (
	"encoding/json"
	"net/url"
	"strings"

	yamlast "github.com/goccy/go-yaml/ast"
)

// matchInputs names the input each match key reads.
var matchInputs = map[string]string{MatchExternalID: "externalId", MatchEmail: "emails", MatchPhone: "phones"}

// match checks and sets the workflow's match, on_match and fresh_ids. Each mistake is placed at its
// own item of the list.
func (p *parser) match(w *Workflow, wfName string, fw *fileWorkflow, node yamlast.Node) {
	list := unwrap(valueOf(node, "match"))
	itemNode := func(i int) yamlast.Node {
		if seq, ok := list.(*yamlast.SequenceNode); ok && i < len(seq.Values) {
			return seq.Values[i]
		}
		return list
	}
	seen := make(map[string]bool, len(fw.Match))
	for i, key := range fw.Match {
		in, known := matchInputs[key]
		switch {
		case !known:
			p.errAt(itemNode(i), "%s: match: unknown key %q (valid: %s, %s, %s)", wfName, key, MatchExternalID, MatchEmail, MatchPhone)
		case seen[key]:
			p.errAt(itemNode(i), "%s: match: %q is listed twice", wfName, key)
		default:
			if _, mapped := w.input(in); !mapped {
				p.errAt(itemNode(i), "%s: match: %q looks customers up by the %s input, which is not mapped in inputs", wfName, key, in)
			}
			seen[key] = true
			w.Match = append(w.Match, key)
		}
	}
	switch fw.OnMatch {
	case "":
		if len(fw.Match) > 0 {
			w.OnMatch = OnMatchSkip
		}
	case OnMatchSkip, OnMatchUpdate:
		if len(fw.Match) == 0 {
			p.errAt(valueOf(node, "on_match"), "%s: on_match %q needs a match list (e.g. match: [externalId, email]): without one the workflow only creates", wfName, fw.OnMatch)
		}
		w.OnMatch = fw.OnMatch
	default:
		p.errAt(valueOf(node, "on_match"), "%s: on_match %q: want skip or update", wfName, fw.OnMatch)
	}
	if len(fw.Match) > 0 && w.Mode == ModeBulk {
		p.errAt(valueOf(node, "match"), "%s: match looks each customer up before sending it, which mode: bulk does not do: use mode: per-item, or drop match", wfName)
	}
	if fw.FreshIDs && !seen[MatchExternalID] {
		p.errAt(valueOf(node, "fresh_ids"), "%s: fresh_ids skips the externalId look-up, but match does not list externalId", wfName)
	}
	w.FreshIDs = fw.FreshIDs
}

// MatchValue returns the value the match key looks the request's customer up by: its externalId,
// its first email or its first phone; "" when the request has none. Values are as normalised by
// the mapping (emails in lower case, phones in E.164).
func (r Request) MatchValue(key string) string {
	switch key {
	case MatchExternalID:
		return r.ExternalID()
	case MatchEmail:
		return firstOf(r["emails"], "email")
	case MatchPhone:
		return firstOf(r["phones"], "phone")
	}
	return ""
}

func firstOf(list any, field string) string {
	items, _ := list.([]any)
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			if s, _ := m[field].(string); strings.TrimSpace(s) != "" {
				return s
			}
		}
	}
	return ""
}

// listSpecs are the list inputs whose items are objects, by name.
var listSpecs = map[string]*listSpec{
	"emails": emailList, "sharedEmails": emailList, "phones": phoneList, "sharedPhones": phoneList,
	"externalIds": externalIDList, "urls": urlList, "socials": socialList, "locations": locationList,
}

// ListEntry returns an item of a customer's list field (emails, phones, tags, …) as a request may
// send it back: an object keeps only the keys the closed schema allows (Kustomer answers with more,
// such as an email's id). id identifies the entry within its list: its main value (an email
// without case), or its JSON.
func ListEntry(field string, item any) (entry any, id string) {
	m, ok := item.(map[string]any)
	spec := listSpecs[field]
	if !ok || spec == nil {
		b, _ := json.Marshal(item)
		if s, ok := item.(string); ok {
			return item, s
		}
		return item, string(b)
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		if _, allowed := spec.keys[k]; allowed {
			out[k] = v
		}
	}
	if s, ok := out[spec.mainKey].(string); ok && spec.mainKey != "" {
		if spec == emailList {
			s = strings.ToLower(s)
		}
		return out, s
	}
	b, _ := json.Marshal(out)
	return out, string(b)
}

// Lookup is one look-up a workflow with match makes for an item before creating it.
type Lookup struct {
	Key   string `json:"key"`   // MatchExternalID, MatchEmail or MatchPhone
	Value string `json:"value"` // as sent
	Path  string `json:"path"`  // e.g. "/v1/customers/email=ada%40example.com"
	// OnlyIfSeen: made only for an item the ledger has seen before (fresh_ids).
	OnlyIfSeen bool `json:"only_if_seen,omitempty"`
}

// Lookups returns the look-ups the workflow makes for req, in order, each one request; the first
// that finds a customer ends them. A key the request has no value for makes none.
func (w *Workflow) Lookups(req Request) []Lookup {
	var out []Lookup
	for _, k := range w.Match {
		v := req.MatchValue(k)
		if v == "" {
			continue
		}
		out = append(out, Lookup{
			Key: k, Value: v,
			Path:       "/v1/customers/" + k + "=" + strings.ReplaceAll(url.PathEscape(v), "+", "%2B"),
			OnlyIfSeen: k == MatchExternalID && w.FreshIDs,
		})
	}
	return out
}
