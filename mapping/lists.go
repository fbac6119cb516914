package mapping

import (
	"encoding/json"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kustomer-sync/kustomer-sync/kustomer/schema"
)

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

// asItems reads an array input: its items, and single when v is one value
// that stands for a one-item array.
func asItems(v any) (items []any, single bool) {
	items, ok := toSlice(v)
	if !ok {
		return []any{v}, true
	}
	return items, false
}

// listScalars are the scalars of the keys of array items, by kind.
var listScalars = map[keyKind]scalar{keyBool: boolScalar, keyNumber: numberScalar}

// list normalises an array of objects: one text or object becomes a one-item array, text items become
// objects, blanks are dropped, type defaults are filled, duplicates (by main value) removed. Paths in
// failures use the position in the input.
func (c *checker) list(spec *listSpec, path string, v any) any {
	if isBlank(v) {
		return nil
	}
	items, _ := asItems(v)
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
	return capped(c, path, out, maxArrayItems, "items")
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
		case keyBool, keyNumber:
			sc := listScalars[kind]
			x, ok := sc.convert(val)
			if !ok {
				c.fail(keyPath, "expected %s, got %s", sc.what, describe(val))
				bad = true
				continue
			}
			out[k] = x
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

// normTags: an array of tag ids (text), at most 20, duplicates removed; one text is one tag.
func normTags(c *checker, path string, v any) any {
	if isBlank(v) {
		return nil
	}
	items, single := asItems(v)
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
	return capped(c, path, out, maxTags, "tags")
}
