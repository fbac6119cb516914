package kustomer

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// errorBody holds both error shapes Kustomer answers with:
// {"errors":[{"code","message","meta"}]} and JSON:API
// {"errors":[{"status","code","title","detail","source":{"parameter"|"pointer"}}]}.
type errorBody struct {
	Errors []errorItem `json:"errors"`
}

type errorItem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Title   string `json:"title"`
	Detail  string `json:"detail"`
	Source  struct {
		Pointer   string `json:"pointer"`
		Parameter string `json:"parameter"`
	} `json:"source"`
	Meta json.RawMessage `json:"meta"`
}

type errorMeta struct {
	SubErrors []struct {
		Title   string `json:"title"`
		Message string `json:"message"`
		Detail  string `json:"detail"`
		Source  struct {
			Pointer   string `json:"pointer"`
			Parameter string `json:"parameter"`
		} `json:"source"`
	} `json:"subErrors"`
}

const excerptMax = 200

// isErrorBody reports whether body is Kustomer's JSON error body: an object
// with a non-empty "errors" array, in either shape.
func isErrorBody(body []byte) bool {
	var eb errorBody
	return json.Unmarshal(body, &eb) == nil && len(eb.Errors) > 0
}

// parseErrorBody fills e.Code, e.Message and e.Pointer from a response body.
// It never fails: an unreadable body gives the status text and an excerpt.
func parseErrorBody(e *Error, body []byte) {
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err == nil && len(eb.Errors) > 0 {
		first := eb.Errors[0]
		e.Code = first.Code
		e.Message = joinNonEmpty(": ", cmp.Or(first.Message, first.Title), differentFrom(first.Detail, first.Message, first.Title))
		e.Pointer = cmp.Or(first.Source.Pointer, first.Source.Parameter)

		var meta errorMeta
		if len(first.Meta) > 0 && json.Unmarshal(first.Meta, &meta) == nil {
			var subs []string
			for _, s := range meta.SubErrors {
				p := cmp.Or(s.Source.Pointer, s.Source.Parameter)
				if e.Pointer == "" {
					e.Pointer = p
				}
				subs = append(subs, joinNonEmpty(" ", p, cmp.Or(s.Title, s.Message, s.Detail)))
			}
			if len(subs) > 0 {
				e.Message = joinNonEmpty(": ", e.Message, strings.Join(subs, "; "))
			}
		}
		if len(eb.Errors) > 1 {
			e.Message = joinNonEmpty(" ", e.Message, fmt.Sprintf("(and %d more)", len(eb.Errors)-1))
		}
		if e.Message == "" {
			e.Message = statusText(e.StatusCode)
		}
		return
	}
	e.Message = statusText(e.StatusCode)
	if ex := excerpt(body); ex != "" {
		e.Message += ": " + ex
	}
}

func statusText(code int) string {
	return cmp.Or(strings.ToLower(http.StatusText(code)), fmt.Sprintf("status %d", code))
}

// excerpt gives a short single-line, valid UTF-8 excerpt of a body.
func excerpt(body []byte) string {
	s := strings.Join(strings.Fields(string(body)), " ")
	s = strings.ToValidUTF8(s, "?")
	if utf8.RuneCountInString(s) <= excerptMax {
		return s
	}
	r := []rune(s)
	return string(r[:excerptMax]) + "…"
}

func differentFrom(v string, others ...string) string {
	for _, o := range others {
		if v == o {
			return ""
		}
	}
	return v
}

func joinNonEmpty(sep string, parts ...string) string {
	var keep []string
	for _, p := range parts {
		if p != "" {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, sep)
}
