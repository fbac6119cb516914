package mapping

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"

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

// keyKind says how a key inside an array item is checked.
type keyKind uint8

const (
	keyText keyKind = iota
	keyMain         // the item's main value, checked by listSpec.main
	keyType         // checked against listSpec.types, defaulted to listSpec.defaultType
	keyBool
	keyNumber
	keyURL
)

// listSpec describes an array input whose items are objects (emails, phones, …).
type listSpec struct {
	mainKey     string             // a plain text item becomes {mainKey: text}; "" if items must be objects
	keys        map[string]keyKind // every key an item may have (the schema is closed)
	types       []string           // allowed "type" values; nil: any text
	defaultType string             // "type" when the input gives none
	main        func(c *checker, path, s string) (string, bool)
}

// The array inputs. Their keys, and the values "type" may take, are Kustomer's schema's; what is the
// mapping's own is which key a plain text item fills, the default type and the check of the main value.
var (
	emailList      = newListSpec(schema.EmailItem, "email", "home", (*checker).email)
	phoneList      = newListSpec(schema.PhoneItem, "phone", "mobile", (*checker).phone)
	externalIDList = newListSpec(schema.ExternalIDItem, "externalId", "", func(c *checker, path, s string) (string, bool) {
		if max := maxLen(schema.ExternalIDItem, "externalId"); utf8.RuneCountInString(s) > max {
			c.fail(path, "%d characters, at most %d allowed", utf8.RuneCountInString(s), max)
			return "", false
		}
		return s, true
	})
	urlList      = newListSpec(schema.URLItem, "url", "", func(c *checker, path, s string) (string, bool) { return c.url(path, s) })
	socialList   = newListSpec(schema.SocialItem, "", "", nil)
	locationList = newListSpec(schema.LocationItem, "", "", nil)
)

// newListSpec reads the keys of an array's items from Kustomer's schema of them.
func newListSpec(item *schema.Object, mainKey, defaultType string, main func(c *checker, path, s string) (string, bool)) *listSpec {
	spec := &listSpec{mainKey: mainKey, keys: make(map[string]keyKind, len(item.Fields)), defaultType: defaultType, main: main}
	for _, f := range item.Fields {
		switch {
		case f.Name == mainKey:
			spec.keys[f.Name] = keyMain
		case f.Name == "type" && f.Kind == schema.Enum:
			spec.keys[f.Name], spec.types = keyType, f.Values
		case f.Kind == schema.Bool:
			spec.keys[f.Name] = keyBool
		case f.Kind == schema.Number:
			spec.keys[f.Name] = keyNumber
		case f.Kind == schema.URI:
			spec.keys[f.Name] = keyURL
		case f.Kind == schema.Text:
			spec.keys[f.Name] = keyText
		default:
			panic("mapping: schema key " + f.Name + " of an array item has no mapping")
		}
	}
	return spec
}

func (s *listSpec) keyList() string {
	keys := make([]string, 0, len(s.keys))
	for k := range s.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

func listField(spec *listSpec) normalizer {
	return func(c *checker, path string, v any) any { return c.list(spec, path, v) }
}

// list normalises an array of objects: one text or object becomes a one-item array, text items become
// objects, blanks are dropped, type defaults are filled, duplicates (by main value) removed. Paths in
// failures use the position in the input.
func (c *checker) list(spec *listSpec, path string, v any) any {
	if isBlank(v) {
		return nil
	}
	items, ok := toSlice(v)
	single := !ok
	if single {
		items = []any{v}
	}
	out := make([]any, 0, len(items))
	seen := make(map[string]bool, len(items))
	for i, item := range items {
		// A single value stands for a one-item array, so its path is that of item 0.
		itemPath := path + "[" + strconv.Itoa(i) + "]"
		obj := c.listItem(spec, itemPath, item)
		if obj == nil {
			continue
		}
		var id string
		if spec.mainKey != "" {
			id, _ = obj[spec.mainKey].(string)
		} else {
			data, _ := json.Marshal(obj) // map keys are sorted, so equal objects give equal text
			id = string(data)
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, obj)
	}
	if len(out) > maxArrayItems {
		c.fail(path, "%d items, at most %d allowed", len(out), maxArrayItems)
		return nil
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// listItem normalises one item, or returns nil when it is blank or wrong.
func (c *checker) listItem(spec *listSpec, path string, item any) map[string]any {
	if isBlank(item) {
		return nil
	}
	in, isObj := toMap(item)
	if !isObj {
		if spec.mainKey == "" {
			c.fail(path, "expected an object, got %s", describe(item))
			return nil
		}
		if _, isScalar := scalarString(item); !isScalar {
			c.fail(path, "expected text or an object, got %s", describe(item))
			return nil
		}
		in = map[string]any{spec.mainKey: item}
	}
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string]any, len(in)+1)
	bad := false
	for _, k := range keys {
		val := in[k]
		kind, known := spec.keys[k]
		keyPath := path + "." + k
		if !known {
			c.fail(keyPath, "unknown key (allowed: %s)", spec.keyList())
			bad = true
			continue
		}
		if isBlank(val) {
			continue
		}
		switch kind {
		case keyMain:
			s, ok := c.text(keyPath, val, 0)
			if ok {
				s, ok = spec.main(c, keyPath, s)
			}
			if ok {
				out[k] = s
			} else {
				bad = true
			}
		case keyText:
			if s, ok := c.text(keyPath, val, 0); ok {
				out[k] = s
			}
		case keyType:
			s, ok := c.text(keyPath, val, 0)
			if !ok {
				continue
			}
			s = strings.ToLower(s)
			if spec.types != nil && !slices.Contains(spec.types, s) {
				c.fail(keyPath, "%s is not one of %s", short(s), strings.Join(spec.types, ", "))
				bad = true
				continue
			}
			out[k] = s
		case keyBool:
			b, ok := toBool(val)
			if !ok {
				c.fail(keyPath, "expected a boolean, got %s", describe(val))
				bad = true
				continue
			}
			out[k] = b
		case keyNumber:
			f, ok := toNumber(val)
			if !ok {
				c.fail(keyPath, "expected a number, got %s", describe(val))
				bad = true
				continue
			}
			out[k] = f
		case keyURL:
			if s, ok := c.url(keyPath, val); ok {
				out[k] = s
			} else {
				bad = true
			}
		}
	}
	if bad {
		return nil
	}
	if spec.mainKey != "" {
		if _, ok := out[spec.mainKey]; !ok {
			return nil // {type: work} without an email is blank, not an error
		}
	}
	if len(out) == 0 {
		return nil
	}
	if spec.defaultType != "" {
		if _, ok := out["type"]; !ok {
			out["type"] = spec.defaultType
		}
	}
	return out
}

// email lower-cases s and checks it is an address Kustomer accepts (local@domain.tld).
func (c *checker) email(path, s string) (string, bool) {
	s = strings.ToLower(s)
	if !schema.ValidEmail(s) {
		c.fail(path, "%s is not an email address", short(s))
		return "", false
	}
	return s, true
}

// phone converts s to E.164 using the workflow's default region for numbers without a country code.
func (c *checker) phone(path, s string) (string, bool) {
	if norm, ok, handled := e164(s); handled {
		if !ok {
			c.fail(path, "%s is not a phone number (default region %s)", short(s), c.region)
		}
		return norm, ok
	}
	num, err := phonenumbers.Parse(s, c.region)
	if err != nil || !phonenumbers.IsPossibleNumber(num) {
		c.fail(path, "%s is not a phone number (default region %s)", short(s), c.region)
		return "", false
	}
	return phonenumbers.Format(num, phonenumbers.E164), true
}

// normTags: an array of tag ids (text), at most 20, duplicates removed; one text is one tag.
func normTags(c *checker, path string, v any) any {
	if isBlank(v) {
		return nil
	}
	items, ok := toSlice(v)
	single := !ok
	if single {
		items = []any{v}
	}
	out := make([]any, 0, len(items))
	for i, item := range items {
		p := path
		if !single {
			p = path + "[" + strconv.Itoa(i) + "]"
		}
		s, ok := c.text(p, item, 0)
		if !ok || slices.Contains(out, any(s)) {
			continue
		}
		out = append(out, s)
	}
	if len(out) > maxTags {
		c.fail(path, "%d tags, at most %d allowed", len(out), maxTags)
		return nil
	}
	if len(out) == 0 {
		return nil
	}
	return out
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
	if len(out) > maxCustomKeys {
		c.fail(path, "%d keys, at most %d allowed", len(out), maxCustomKeys)
		return nil
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

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
	case "Num":
		f, ok := toNumber(v)
		if !ok {
			c.fail(path, "%s is not a number", shortValue(v))
			return nil
		}
		return f
	case "At":
		if s, ok := c.date(path, v); ok {
			return s
		}
	case "Bool":
		b, ok := toBool(v)
		if !ok {
			c.fail(path, "%s is not a boolean", shortValue(v))
			return nil
		}
		return b
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

// e164 checks a number already written in E.164 ("+" and 2 to 17 digits) without the library's parser,
// whose regular expressions cost about 10 µs a number: it reads the country code from the library's
// table and checks the length against its metadata. handled is false when the fast path does not apply
// (another form, an unknown country code, a national part starting with 0, a region whose national
// prefix rules could rewrite the number); the caller then parses in full. The fast and full paths are
// tested to agree.
func e164(s string) (normalized string, ok, handled bool) {
	if len(s) < 4 || len(s) > 18 || s[0] != '+' || s[1] == '0' {
		return "", false, false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return "", false, false
		}
	}
	digits := s[1:]
	for ccLen := 1; ccLen <= 3 && ccLen < len(digits); ccLen++ {
		cc, _ := strconv.Atoi(digits[:ccLen])
		region := phonenumbers.GetRegionCodeForCountryCode(cc)
		if region == phonenumbers.UNKNOWN_REGION {
			continue
		}
		national := digits[ccLen:]
		prefixes, simple := nationalPrefixes(cc)
		if !simple || national[0] == '0' {
			return "", false, false
		}
		for _, p := range prefixes {
			if strings.HasPrefix(national, p) {
				return "", false, false
			}
		}
		nn, err := strconv.ParseUint(national, 10, 64)
		if err != nil {
			return "", false, false
		}
		cc32 := int32(cc)
		num := &phonenumbers.PhoneNumber{CountryCode: &cc32, NationalNumber: &nn}
		if !phonenumbers.IsPossibleNumber(num) {
			return "", false, true
		}
		return s, true, true
	}
	return "", false, false
}

// nationalPrefixes returns, for a country code, the national prefix its main region strips from numbers
// when parsing, and false when that is a pattern or a rewrite rule (then only the full parser gives the
// library's answer).
func nationalPrefixes(cc int) ([]string, bool) {
	fastRegionsOnce.Do(func() {
		fastRegions = make(map[int]*prefixRule)
		coll, err := phonenumbers.MetadataCollection()
		if err != nil {
			return
		}
		for _, md := range coll.GetMetadata() {
			cc := int(md.GetCountryCode())
			if md.GetId() != phonenumbers.GetRegionCodeForCountryCode(cc) {
				continue // the parser reads international numbers with the main region's rules only
			}
			r := &prefixRule{simple: true}
			fastRegions[cc] = r
			p := md.GetNationalPrefixForParsing()
			switch {
			case md.GetNationalPrefixTransformRule() != "":
				r.simple = false
			case p == "":
			case strings.Trim(p, "0123456789") == "":
				r.prefixes = append(r.prefixes, p)
			default:
				r.simple = false
			}
		}
	})
	r := fastRegions[cc]
	if r == nil {
		return nil, false
	}
	return r.prefixes, r.simple
}

type prefixRule struct {
	prefixes []string
	simple   bool
}

var (
	fastRegionsOnce sync.Once
	fastRegions     map[int]*prefixRule // country code → its parsing rule, read-only after the Once
)
