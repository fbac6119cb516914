package mapping

import (
	"fmt"
	"slices"
	"strings"
)

// maxListItems is Kustomer's limit on every array of a customer (emails,
// phones, …): a merged list is cut to it.
const maxListItems = 10

// MatchKeys names req's match values by the workflow's match keys, e.g.
// "email:ada@example.com" (an email in lower case), sorted: the ledger locks
// them while an item's attempt looks its customer up, and items take them
// in this one order.
func (w *Workflow) MatchKeys(req Request) []string {
	var names []string
	for _, k := range w.Match {
		if v := req.MatchValue(k); v != "" {
			if k == MatchEmail {
				v = strings.ToLower(v)
			}
			names = append(names, k+":"+v)
		}
	}
	slices.Sort(names)
	return names
}

// MergeLists returns the body of an update: req, with each of its lists
// (emails, phones, tags, …) merged into the customer's, since a list sent
// replaces Kustomer's: the customer's entries first, then req's new ones,
// cut to maxListItems. dropped names each new entry that did not fit, with
// its reason, as "emails: ada@example.com (Kustomer keeps at most 10 per list)". When the customer's lists are unknown (known
// is false), req's lists are left out rather than replacing them, and named
// in dropped. A customer's externalId is never replaced by another.
func MergeLists(req Request, existing map[string]any, known bool) (Request, []string) {
	body := make(Request, len(req))
	var dropped []string
	for field, v := range req {
		if old, _ := existing[field].(string); field == "externalId" && old != "" && old != v {
			// The customer's identity in the source stays; the item matched it by another key.
			dropped = append(dropped, fmt.Sprintf("externalId: %v (the customer, found by another match key, keeps its own: %s)", v, old))
			continue
		}
		list, ok := v.([]any)
		if !ok {
			body[field] = v
			continue
		}
		if !known {
			for _, it := range list {
				_, id := ListEntry(field, it)
				dropped = append(dropped, field+": "+id+" (the customer's current list could not be read)")
			}
			continue
		}
		old, _ := existing[field].([]any)
		merged := make([]any, 0, maxListItems)
		seen := make(map[string]bool, len(old)+len(list))
		for _, it := range old {
			entry, id := ListEntry(field, it)
			merged = append(merged, entry)
			seen[id] = true
		}
		for _, it := range list {
			_, id := ListEntry(field, it)
			switch {
			case seen[id]:
			case len(merged) >= maxListItems:
				dropped = append(dropped, field+": "+id+" (Kustomer keeps at most 10 per list)")
			default:
				merged = append(merged, it)
			}
			seen[id] = true
		}
		body[field] = merged
	}
	slices.Sort(dropped)
	return body, dropped
}
