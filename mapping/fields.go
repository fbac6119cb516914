package mapping

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kustomer-sync/kustomer-sync/kustomer/schema"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// Kustomer's limits on the create body: package kustomer/schema is the one description of them, which
// the sandbox enforces too.
const (
	maxArrayItems = schema.MaxArrayItems
	maxTags       = schema.MaxTags
	maxCustomKeys = schema.MaxCustomKeys
	maxCustomText = schema.MaxCustomText
)

// maxLen is the most characters Kustomer's schema allows in the text field name (0: no limit).
func maxLen(o *schema.Object, name string) int {
	f, ok := o.Field(name)
	if !ok || f.Kind != schema.Text {
		panic("mapping: schema has no text field " + name)
	}
	return f.Max
}

// dateLayout is how dates are sent: RFC 3339 in UTC with milliseconds, as Kustomer returns them.
const dateLayout = "2006-01-02T15:04:05.000Z07:00"

// normalizer turns an evaluated input into its request form, or nil when it is blank. It records
// validation failures on c.
type normalizer func(c *checker, path string, v any) any

// fields are the inputs of Kustomer's create body, in the order they are evaluated and reported.
var fields = []struct {
	name string
	norm normalizer
}{
	{"name", textField(maxLen(schema.Customer, "name"))},
	{"externalId", textField(maxLen(schema.Customer, "externalId"))},
	{"externalIds", listField(externalIDList)},
	{"username", textField(maxLen(schema.Customer, "username"))},
	{"company", textField(maxLen(schema.Customer, "company"))},
	{"locale", textField(maxLen(schema.Customer, "locale"))},
	{"timeZone", textField(maxLen(schema.Customer, "timeZone"))},
	{"emails", listField(emailList)},
	{"sharedEmails", listField(emailList)},
	{"phones", listField(phoneList)},
	{"sharedPhones", listField(phoneList)},
	{"urls", listField(urlList)},
	{"socials", listField(socialList)},
	{"locations", listField(locationList)},
	{"tags", normTags},
	{"avatarUrl", urlField},
	{"birthdayAt", dateField},
	{"signedUpAt", dateField},
	{"custom", normCustom},
}

// fieldIndex maps an input name to its position in fields.
var fieldIndex = func() map[string]int {
	m := make(map[string]int, len(fields))
	for i, f := range fields {
		m[f.name] = i
	}
	return m
}()

// FieldNames returns the names of every input a workflow may map, sorted.
func FieldNames() []string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	sort.Strings(names)
	return names
}

// checker collects the validation failures of one item.
type checker struct {
	errs     Errors
	template string // template of the input being checked
	region   string // default region for phone numbers
}

func (c *checker) fail(path, format string, args ...any) {
	c.errs = append(c.errs, &Error{Kind: outcome.Validation, Field: path, Template: c.template, Msg: fmt.Sprintf(format, args...)})
}

// text returns v as trimmed one-line text, control characters removed (see cleanText); false when blank
// or not text (then a failure is recorded). max 0 means no limit.
func (c *checker) text(path string, v any, max int) (string, bool) {
	return c.textOf(path, v, max, false)
}

// textOf is text, keeping line breaks and tabs when multiline.
func (c *checker) textOf(path string, v any, max int, multiline bool) (string, bool) {
	if v == nil {
		return "", false
	}
	s, ok := scalarString(v)
	if !ok {
		c.fail(path, "expected text, got %s", describe(v))
		return "", false
	}
	s = strings.TrimSpace(cleanText(s, multiline))
	if s == "" {
		return "", false
	}
	if max > 0 {
		if n := utf8.RuneCountInString(s); n > max {
			c.fail(path, "%d characters, at most %d allowed", n, max)
			return "", false
		}
	}
	return s, true
}

// cleanText removes the control characters a publisher may put in text (NUL and the rest of C0, DEL,
// C1), which Kustomer would store as they are and which break the programs that read them back. In
// multi-line text a tab, a line feed and a CR LF (as one line feed) stay; in one-line text each of them
// becomes a space. Text without control characters is returned as it is, without copying.
func cleanText(s string, multiline bool) string {
	i := 0
	for i < len(s) && !isControlAt(s, i) {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for i < len(s) {
		if !isControlAt(s, i) {
			b.WriteByte(s[i])
			i++
			continue
		}
		ch := s[i]
		switch {
		case ch == '\r' && i+1 < len(s) && s[i+1] == '\n':
			// A CR LF is one line break: the LF that follows decides.
		case multiline && (ch == '\t' || ch == '\n'):
			b.WriteByte(ch)
		case multiline && ch == '\r':
			b.WriteByte('\n')
		case ch == '\t' || ch == '\n' || ch == '\r':
			b.WriteByte(' ')
		}
		if ch == 0xC2 { // a C1 control is two bytes in UTF-8
			i++
		}
		i++
	}
	return b.String()
}

// isControlAt reports whether a control character starts at s[i]: C0 (0x00–0x1F), DEL (0x7F) or C1
// (U+0080–U+009F, encoded 0xC2 0x80–0x9F).
func isControlAt(s string, i int) bool {
	ch := s[i]
	return ch < 0x20 || ch == 0x7F || ch == 0xC2 && i+1 < len(s) && s[i+1] >= 0x80 && s[i+1] <= 0x9F
}

// stringField makes a normalizer of a check that yields a string: the
// string when the check passes, nothing (the field is left out) otherwise.
func stringField(check func(c *checker, path string, v any) (string, bool)) normalizer {
	return func(c *checker, path string, v any) any {
		if s, ok := check(c, path, v); ok {
			return s
		}
		return nil
	}
}

func textField(max int) normalizer {
	return stringField(func(c *checker, path string, v any) (string, bool) { return c.text(path, v, max) })
}

var (
	urlField  = stringField((*checker).url)
	dateField = stringField((*checker).date)
)

func (c *checker) url(path string, v any) (string, bool) {
	s, ok := c.text(path, v, 0)
	if !ok {
		return "", false
	}
	if !validURL(s) {
		c.fail(path, "%s is not a URL (it needs a scheme such as https://)", short(s))
		return "", false
	}
	return s, true
}

func validURL(s string) bool {
	if strings.ContainsAny(s, " \t\r\n") {
		return false
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return false
	}
	if (u.Scheme == "http" || u.Scheme == "https") && u.Host == "" {
		return false
	}
	return true
}

func (c *checker) date(path string, v any) (string, bool) {
	if isBlank(v) {
		return "", false
	}
	t, ok := toTime(v)
	if !ok {
		if s, isText := v.(string); isText {
			c.fail(path, "%s is not an RFC 3339 date-time", short(strings.TrimSpace(s)))
		} else {
			c.fail(path, "expected an RFC 3339 date-time, got %s", describe(v))
		}
		return "", false
	}
	return t.UTC().Format(dateLayout), true
}

// toTime reads a date: time.Time, an RFC 3339 string (or its date-only or zone-less forms, taken as
// UTC), or Unix seconds as a number.
func toTime(v any) (time.Time, bool) {
	switch v := v.(type) {
	case time.Time:
		return v, true
	case string:
		s := strings.TrimSpace(v)
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
			if t, err := time.Parse(layout, s); err == nil {
				return t, true
			}
		}
		return time.Time{}, false
	}
	if f, ok := toNumber(v); ok && !isText(v) {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true
	}
	return time.Time{}, false
}

func isText(v any) bool { _, ok := v.(string); return ok }

// toNumber reads a number, or a string holding one.
func toNumber(v any) (float64, bool) {
	var f float64
	switch v := v.(type) {
	case float64:
		f = v
	case float32:
		f = float64(v)
	case int:
		f = float64(v)
	case int64:
		f = float64(v)
	case int32:
		f = float64(v)
	case uint64:
		f = float64(v)
	case uint:
		f = float64(v)
	case json.Number:
		var err error
		if f, err = v.Float64(); err != nil {
			return 0, false
		}
	case string:
		var err error
		if f, err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
			return 0, false
		}
	default:
		return 0, false
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// toBool reads a boolean, or a string holding one (true/false, yes/no, 1/0).
func toBool(v any) (bool, bool) {
	switch v := v.(type) {
	case bool:
		return v, true
	case string:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "yes", "1", "t", "y", "on":
			return true, true
		case "false", "no", "0", "f", "n", "off":
			return false, true
		}
	}
	if f, ok := toNumber(v); ok && (f == 0 || f == 1) {
		return f == 1, true
	}
	return false, false
}

// toSlice reads an array of any element type.
func toSlice(v any) ([]any, bool) {
	switch v := v.(type) {
	case []any:
		return v, true
	case []string:
		out := make([]any, len(v))
		for i, s := range v {
			out[i] = s
		}
		return out, true
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
		return nil, false
	}
	if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8 {
		return nil, false // []byte is text, not an array
	}
	out := make([]any, rv.Len())
	for i := range out {
		out[i] = rv.Index(i).Interface()
	}
	return out, true
}

// toMap reads an object with string keys.
func toMap(v any) (map[string]any, bool) {
	if m, ok := v.(map[string]any); ok {
		return m, true
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Map || rv.Type().Key().Kind() != reflect.String {
		return nil, false
	}
	out := make(map[string]any, rv.Len())
	iter := rv.MapRange()
	for iter.Next() {
		out[iter.Key().String()] = iter.Value().Interface()
	}
	return out, true
}

// normCustom checks and coerces custom attributes: the key's suffix sets the value's type.
func normCustom(c *checker, path string, v any) any {
	if isBlank(v) {
		return nil
	}
	m, ok := toMap(v)
	if !ok {
		c.fail(path, "expected an object of custom attributes, got %s", describe(v))
		return nil
	}
	out := make(map[string]any, len(m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if val := c.customValue(path+"."+k, k, m[k]); val != nil {
			out[k] = val
		}
	}
	return c.customDone(path, out)
}

func (c *checker) customDone(path string, out map[string]any) any {
	return capped(c, path, out, maxCustomKeys, "keys")
}

// capped answers out, or nil when it is empty or holds more than limit
// entries (a failure at path that counts them as what: "items", "keys").
func capped[T []any | map[string]any](c *checker, path string, out T, limit int, what string) any {
	if len(out) > limit {
		c.fail(path, "%d %s, at most %d allowed", len(out), what, limit)
		return nil
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// scalar converts a value to a JSON number or boolean; what is its result
// as a message names it.
type scalar struct {
	convert func(any) (any, bool)
	what    string
}

var (
	numberScalar = scalar{func(v any) (any, bool) { return toNumber(v) }, "a number"}
	boolScalar   = scalar{func(v any) (any, bool) { return toBool(v) }, "a boolean"}
	// customScalars are the scalars of the custom attributes, by key suffix.
	customScalars = map[string]scalar{"Num": numberScalar, "Bool": boolScalar}
)

// customValue coerces one custom attribute to the type its key's suffix names, or returns nil.
func (c *checker) customValue(path, key string, v any) any {
	suffix := schema.CustomSuffix(key)
	if suffix == "" {
		c.fail(path, "%s", schema.CustomKeyRule)
		return nil
	}
	if isBlank(v) {
		return nil
	}
	switch suffix {
	case "Str", "Txt":
		// Txt is Kustomer's multi-line text: its line breaks and tabs stay.
		if s, ok := c.textOf(path, v, maxCustomText, suffix == "Txt"); ok {
			return s
		}
	case "Num", "Bool":
		sc := customScalars[suffix]
		x, ok := sc.convert(v)
		if !ok {
			c.fail(path, "%s is not %s", shortValue(v), sc.what)
			return nil
		}
		return x
	case "At":
		if s, ok := c.date(path, v); ok {
			return s
		}
	case "Url":
		if s, ok := c.url(path, v); ok {
			return s
		}
	}
	return nil
}

// short quotes s for a message, cut to 64 characters.
func short(s string) string {
	if utf8.RuneCountInString(s) > 64 {
		r := []rune(s)
		s = string(r[:64]) + "…"
	}
	return quote(s)
}

func shortValue(v any) string {
	if s, ok := v.(string); ok {
		return short(strings.TrimSpace(s))
	}
	if s, ok := scalarString(v); ok {
		return s
	}
	return describe(v)
}
