package sandbox

import (
	"encoding/json"
	"fmt"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// The create-customer body schema, after Kustomer's OpenAPI spec: closed at
// every level (additionalProperties: false), no field required, at most 10
// unique items per array, 20 tags, 100 custom keys typed by their suffix.
const (
	maxArrayItems = 10
	maxTags       = 20
	maxCustomKeys = 100
	maxCustomStr  = 1024
	maxClientRef  = 255
)

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

var (
	e164RE = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)
	// customKeyRE is Kustomer's rule for custom attribute keys: camelCase (a
	// lowercase letter, then letters and digits) and the type suffix. The
	// mapping package checks the same rule before sending.
	customKeyRE = regexp.MustCompile(`^[a-z][A-Za-z0-9]*(Str|Txt|Num|At|Bool|Url)$`)

	emailTypes    = []string{"home", "work", "other"}
	phoneTypes    = []string{"mobile", "home", "work", "fax", "other"}
	urlTypes      = []string{"website", "blog", "social", "other"}
	locationTypes = []string{"home", "work", "other"}
	socialTypes   = []string{"twitter", "facebook", "instagram", "linkedin", "pinterest", "youtube", "tiktok", "other"}
)

var (
	externalIDItem = object(map[string]rule{"externalId": str(1, 256), "verified": boolean}, "externalId")
	emailItem      = object(map[string]rule{"email": email, "type": enum(emailTypes), "verified": boolean}, "email")
	phoneItem      = object(map[string]rule{"phone": phone, "type": enum(phoneTypes), "verified": boolean}, "phone")
	urlItem        = object(map[string]rule{"url": uri, "type": enum(urlTypes)}, "url")
	socialItem     = object(map[string]rule{
		"type": enum(socialTypes), "userid": str(0, 256), "username": str(0, 256), "url": uri, "verified": boolean,
	}, "type")
	locationItem = object(map[string]rule{
		"type": enum(locationTypes), "name": str(0, 256), "address": str(0, 256), "address2": str(0, 256),
		"address3": str(0, 256), "latitude": number, "longitude": number, "cityName": str(0, 256),
		"countryName": str(0, 256), "countryCode": str(0, 256), "regionName": str(0, 256),
		"regionCode": str(0, 256), "zipCode": str(0, 256),
	})

	// customerFields are the keys a create body may hold; any other is a 400.
	customerFields = map[string]rule{
		"name":                   nullable(str(0, 256)),
		"company":                nullable(str(0, 256)),
		"externalId":             nullable(str(1, 256)),
		"username":               nullable(str(0, 256)),
		"locale":                 nullable(str(0, 16)),
		"timeZone":               nullable(str(0, 64)),
		"gender":                 nullable(enum([]string{"m", "f"})),
		"avatarUrl":              nullable(uri),
		"signedUpAt":             nullable(dateTime),
		"birthdayAt":             nullable(dateTime),
		"lastActivityAt":         nullable(dateTime),
		"lastCustomerActivityAt": nullable(dateTime),
		"lastSeenAt":             nullable(dateTime),
		"createdAt":              nullable(dateTime),
		"importedAt":             nullable(dateTime),
		"externalIds":            array(maxArrayItems, externalIDItem),
		"sharedExternalIds":      array(maxArrayItems, externalIDItem),
		"emails":                 array(maxArrayItems, emailItem),
		"sharedEmails":           array(maxArrayItems, emailItem),
		"phones":                 array(maxArrayItems, phoneItem),
		"sharedPhones":           array(maxArrayItems, phoneItem),
		"whatsapps":              array(maxArrayItems, phoneItem),
		"socials":                array(maxArrayItems, socialItem),
		"sharedSocials":          array(maxArrayItems, socialItem),
		"urls":                   array(maxArrayItems, urlItem),
		"locations":              array(maxArrayItems, locationItem),
		"tags":                   array(maxTags, str(1, 256)),
		"custom":                 custom,
	}
)

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

func dateTime(c *checker, ptr string, v any) {
	s, ok := v.(string)
	if !ok {
		c.add(ptr, "Invalid type", "expected date-time string, got "+typeName(v))
		return
	}
	if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
		c.add(ptr, "Invalid format", "expected an RFC 3339 date-time")
	}
}

func uri(c *checker, ptr string, v any) {
	s, ok := v.(string)
	if !ok {
		c.add(ptr, "Invalid type", "expected URI string, got "+typeName(v))
		return
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || (u.Host == "" && u.Opaque == "") {
		c.add(ptr, "Invalid format", "expected an absolute URI")
	}
}

func email(c *checker, ptr string, v any) {
	s, ok := v.(string)
	if !ok {
		c.add(ptr, "Invalid type", "expected email string, got "+typeName(v))
		return
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s || len(s) > 254 {
		c.add(ptr, "Invalid email", "not an email address")
	}
}

func phone(c *checker, ptr string, v any) {
	s, ok := v.(string)
	if !ok {
		c.add(ptr, "Invalid type", "expected phone string, got "+typeName(v))
		return
	}
	if !e164RE.MatchString(s) {
		c.add(ptr, "Invalid phone", "expected an E.164 phone number such as +14155550100")
	}
}

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
	if len(m) > maxCustomKeys {
		c.add(ptr, "Too many properties", fmt.Sprintf("%d custom attributes, at most %d allowed", len(m), maxCustomKeys))
	}
	for _, k := range sortedKeys(m) {
		p := ptr + "/" + escapePointer(k)
		sub := customKeyRE.FindStringSubmatch(k)
		if sub == nil {
			c.add(p, "Additional properties not allowed", fmt.Sprintf("custom attribute %q must be camelCase, starting with a lowercase letter, and end in Str, Txt, Num, At, Bool or Url", k))
			continue
		}
		val := m[k]
		if val == nil {
			continue
		}
		switch sub[1] {
		case "Str", "Txt":
			str(0, maxCustomStr)(c, p, val)
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
