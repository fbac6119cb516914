package sandbox

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/kustomer-sync/kustomer-sync/kustomer/schema"
)

// maxClientRef bounds the bulk-only "_clientRef" key, which is not part of
// the customer schema.
const maxClientRef = 255

// violation is one schema error, reported as a JSON:API error object.
type violation struct {
	Pointer string
	Title   string
	Detail  string
}

type checker struct{ errs []violation }

func (c *checker) add(ptr, title, detail string) {
	c.errs = append(c.errs, violation{Pointer: ptr, Title: title, Detail: detail})
}

// rule checks one value found at ptr.
type rule func(c *checker, ptr string, v any)

// customerFields are the keys a create body may hold, built from the one
// description of the schema (package kustomer/schema) the mapping checks
// against too; any other key is a 400. Scalars at the top level may be null.
var customerFields = func() map[string]rule {
	m := make(map[string]rule, len(schema.Customer.Fields))
	for _, f := range schema.Customer.Fields {
		r := fieldRule(f)
		if f.Kind != schema.List && f.Kind != schema.Custom {
			r = nullable(r)
		}
		m[f.Name] = r
	}
	return m
}()

// fieldRule is the rule that checks a value of field f.
func fieldRule(f schema.Field) rule {
	switch f.Kind {
	case schema.Text:
		return str(f.Min, f.Max)
	case schema.Number:
		return number
	case schema.Bool:
		return boolean
	case schema.DateTime:
		return dateTime
	case schema.URI:
		return uri
	case schema.Email:
		return email
	case schema.Phone:
		return phone
	case schema.Enum:
		return enum(f.Values)
	case schema.Custom:
		return custom
	case schema.List:
		if f.Item != nil {
			return array(f.Max, objectRule(f.Item))
		}
		return array(f.Max, fieldRule(*f.Elem))
	}
	panic("sandbox: schema field " + f.Name + " of no known kind")
}

// objectRule is the rule that checks a closed object of schema o.
func objectRule(o *schema.Object) rule {
	props := make(map[string]rule, len(o.Fields))
	for _, f := range o.Fields {
		props[f.Name] = fieldRule(f)
	}
	if o.Required == "" {
		return object(props)
	}
	return object(props, o.Required)
}

// validateCustomer checks one create body; ptr prefixes every pointer ("" for
// a single create, "/3" for the fourth item of a bulk). clientRef allows the
// bulk-only "_clientRef" key.
func validateCustomer(c *checker, ptr string, body map[string]any, clientRef bool) {
	for _, k := range sortedKeys(body) {
		v := body[k]
		if k == "_clientRef" && clientRef {
			s, ok := v.(string)
			if !ok || s == "" || utf8.RuneCountInString(s) > maxClientRef {
				c.add(ptr+"/_clientRef", "Invalid _clientRef", fmt.Sprintf("must be a non-empty string of at most %d characters", maxClientRef))
			}
			continue
		}
		r, ok := customerFields[k]
		if !ok {
			c.add(ptr+"/"+escapePointer(k), "Additional properties not allowed", fmt.Sprintf("property %q is not allowed", k))
			continue
		}
		r(c, ptr+"/"+k, v)
	}
}

func nullable(r rule) rule {
	return func(c *checker, ptr string, v any) {
		if v != nil {
			r(c, ptr, v)
		}
	}
}

func str(minLen, maxLen int) rule {
	return func(c *checker, ptr string, v any) {
		s, ok := v.(string)
		if !ok {
			c.add(ptr, "Invalid type", "expected string, got "+typeName(v))
			return
		}
		if n := utf8.RuneCountInString(s); n < minLen || n > maxLen {
			c.add(ptr, "Invalid length", fmt.Sprintf("length %d is outside %d..%d", n, minLen, maxLen))
		}
	}
}

func boolean(c *checker, ptr string, v any) {
	if _, ok := v.(bool); !ok {
		c.add(ptr, "Invalid type", "expected boolean, got "+typeName(v))
	}
}

func number(c *checker, ptr string, v any) {
	if _, ok := v.(float64); !ok {
		c.add(ptr, "Invalid type", "expected number, got "+typeName(v))
	}
}

// formatted checks a string of a kind (as the type error names it) that
// valid accepts; one valid refuses gets title and detail.
func formatted(kind, title, detail string, valid func(string) bool) rule {
	return func(c *checker, ptr string, v any) {
		s, ok := v.(string)
		if !ok {
			c.add(ptr, "Invalid type", "expected "+kind+" string, got "+typeName(v))
			return
		}
		if !valid(s) {
			c.add(ptr, title, detail)
		}
	}
}

var (
	dateTime = formatted("date-time", "Invalid format", "expected an RFC 3339 date-time", func(s string) bool {
		_, err := time.Parse(time.RFC3339Nano, s)
		return err == nil
	})
	uri = formatted("URI", "Invalid format", "expected an absolute URI", func(s string) bool {
		u, err := url.Parse(s)
		return err == nil && u.Scheme != "" && (u.Host != "" || u.Opaque != "")
	})
	email = formatted("email", "Invalid email", "not an email address", schema.ValidEmail)
	phone = formatted("phone", "Invalid phone", "expected an E.164 phone number such as +14155550100", schema.ValidE164)
)

func enum(values []string) rule {
	return func(c *checker, ptr string, v any) {
		s, ok := v.(string)
		if !ok || !slices.Contains(values, s) {
			c.add(ptr, "Invalid value", fmt.Sprintf("expected one of %q", values))
		}
	}
}

// object checks a closed object: only props, with required keys present.
func object(props map[string]rule, required ...string) rule {
	return func(c *checker, ptr string, v any) {
		m, ok := v.(map[string]any)
		if !ok {
			c.add(ptr, "Invalid type", "expected object, got "+typeName(v))
			return
		}
		for _, k := range required {
			if _, ok := m[k]; !ok {
				c.add(ptr+"/"+k, "Missing required property", fmt.Sprintf("property %q is required", k))
			}
		}
		for _, k := range sortedKeys(m) {
			r, ok := props[k]
			if !ok {
				c.add(ptr+"/"+escapePointer(k), "Additional properties not allowed", fmt.Sprintf("property %q is not allowed", k))
				continue
			}
			r(c, ptr+"/"+k, m[k])
		}
	}
}

// array checks an array of at most maxItems unique items.
func array(maxItems int, item rule) rule {
	return func(c *checker, ptr string, v any) {
		a, ok := v.([]any)
		if !ok {
			c.add(ptr, "Invalid type", "expected array, got "+typeName(v))
			return
		}
		if len(a) > maxItems {
			c.add(ptr, "Too many items", fmt.Sprintf("%d items, at most %d allowed", len(a), maxItems))
		}
		seen := make(map[string]int, len(a))
		for i, it := range a {
			key, _ := json.Marshal(it) // maps marshal with sorted keys: equal values, equal bytes
			if j, dup := seen[string(key)]; dup {
				c.add(ptr, "Array items are not unique", fmt.Sprintf("items %d and %d are identical", j, i))
			} else {
				seen[string(key)] = i
			}
			item(c, ptr+"/"+strconv.Itoa(i), it)
		}
	}
}

// custom checks custom attributes: the key's suffix sets the value's type;
// every value may be null.
func custom(c *checker, ptr string, v any) {
	m, ok := v.(map[string]any)
	if !ok {
		c.add(ptr, "Invalid type", "expected object, got "+typeName(v))
		return
	}
	if len(m) > schema.MaxCustomKeys {
		c.add(ptr, "Too many properties", fmt.Sprintf("%d custom attributes, at most %d allowed", len(m), schema.MaxCustomKeys))
	}
	for _, k := range sortedKeys(m) {
		p := ptr + "/" + escapePointer(k)
		suffix := schema.CustomSuffix(k)
		if suffix == "" {
			c.add(p, "Additional properties not allowed", fmt.Sprintf("custom attribute %q must be camelCase, starting with a lowercase letter, and end in Str, Txt, Num, At, Bool or Url", k))
			continue
		}
		val := m[k]
		if val == nil {
			continue
		}
		switch suffix {
		case "Str", "Txt":
			str(0, schema.MaxCustomText)(c, p, val)
		case "Num":
			number(c, p, val)
		case "At":
			dateTime(c, p, val)
		case "Bool":
			boolean(c, p, val)
		case "Url":
			uri(c, p, val)
		}
	}
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// escapePointer escapes a key for a JSON pointer (RFC 6901).
func escapePointer(k string) string {
	out := make([]byte, 0, len(k))
	for i := 0; i < len(k); i++ {
		switch k[i] {
		case '~':
			out = append(out, '~', '0')
		case '/':
			out = append(out, '~', '1')
		default:
			out = append(out, k[i])
		}
	}
	return string(out)
}
