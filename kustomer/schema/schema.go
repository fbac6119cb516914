// Package schema describes Kustomer's create-customer body (POST
// /v1/customers, and each item of a bulk create): the fields, their types
// and limits, the keys of array items, the email and custom-key rules. It is
// the one description of those rules: the mapping package checks a request
// against it before spending a call, and the sandbox refuses with it what
// Kustomer refuses, so the two cannot drift apart.
//
// It is pure data and functions on strings, and imports only the standard
// library, so the pure mapping package can read it without the HTTP client
// (package kustomer), and the sandbox without the templating.
package schema

import (
	"strings"
)

// Limits of the body (see kustomer-api.md).
const (
	MaxArrayItems = 10   // items in every array but tags
	MaxTags       = 20   // tag ids in tags
	MaxCustomKeys = 100  // keys in custom
	MaxCustomText = 1024 // characters of a Str or Txt custom value
	MaxEmailLen   = 254  // characters of an email address
)

// Kind is the type a field's value must have.
type Kind uint8

const (
	Text     Kind = iota + 1 // a string of Min to Max characters (Max 0: no limit)
	Number                   // a JSON number
	Bool                     // a JSON boolean
	DateTime                 // an RFC 3339 date-time
	URI                      // an absolute URI
	Email                    // an address [ValidEmail] accepts
	Phone                    // an E.164 number, as [ValidE164] checks it
	Enum                     // one of Values
	List                     // an array of at most Max unique items: Item objects, or Elem values
	Custom                   // custom attributes: keys as [CustomSuffix] reads them, values typed by suffix
)

// Field is one key of an object and what its value must be.
type Field struct {
	Name     string
	Kind     Kind
	Min, Max int      // Text: characters; List: items
	Values   []string // Enum: the allowed values
	Item     *Object  // List: the schema of each item, when items are objects
	Elem     *Field   // List: the schema of each item, when items are plain values (tags)
}

// Object is a closed object: only Fields' keys, Required among them.
type Object struct {
	Required string // the key every item must have ("email"); "" for none
	Fields   []Field
}

// Field returns the field named name, and false when the object does not
// allow that key.
func (o *Object) Field(name string) (Field, bool) {
	for _, f := range o.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return Field{}, false
}

// The values "type" may take in the items of each array.
var (
	EmailTypes    = []string{"home", "work", "other"}
	PhoneTypes    = []string{"mobile", "home", "work", "fax", "other"}
	URLTypes      = []string{"website", "blog", "social", "other"}
	LocationTypes = []string{"home", "work", "other"}
	SocialTypes   = []string{"twitter", "facebook", "instagram", "linkedin", "pinterest", "youtube", "tiktok", "other"}
)

func text(name string, lo, hi int) Field { return Field{Name: name, Kind: Text, Min: lo, Max: hi} }
func of(name string, k Kind) Field       { return Field{Name: name, Kind: k} }
func enum(name string, v []string) Field { return Field{Name: name, Kind: Enum, Values: v} }
func list(name string, max int, item *Object) Field {
	return Field{Name: name, Kind: List, Max: max, Item: item}
}

// The objects found in arrays.
var (
	ExternalIDItem = &Object{Required: "externalId", Fields: []Field{text("externalId", 1, 256), of("verified", Bool)}}
	EmailItem      = &Object{Required: "email", Fields: []Field{of("email", Email), enum("type", EmailTypes), of("verified", Bool)}}
	PhoneItem      = &Object{Required: "phone", Fields: []Field{of("phone", Phone), enum("type", PhoneTypes), of("verified", Bool)}}
	URLItem        = &Object{Required: "url", Fields: []Field{of("url", URI), enum("type", URLTypes)}}
	SocialItem     = &Object{Required: "type", Fields: []Field{
		enum("type", SocialTypes), text("userid", 0, 256), text("username", 0, 256), of("url", URI), of("verified", Bool),
	}}
	LocationItem = &Object{Fields: []Field{
		enum("type", LocationTypes), text("name", 0, 256), text("address", 0, 256), text("address2", 0, 256),
		text("address3", 0, 256), of("latitude", Number), of("longitude", Number), text("cityName", 0, 256),
		text("countryName", 0, 256), text("countryCode", 0, 256), text("regionName", 0, 256),
		text("regionCode", 0, 256), text("zipCode", 0, 256),
	}}
)

// Customer is the create body, after Kustomer's OpenAPI spec: closed at
// every level (additionalProperties: false), no field required.
var Customer = &Object{Fields: []Field{
	text("name", 0, 256),
	text("company", 0, 256),
	text("externalId", 1, 256),
	text("username", 0, 256),
	text("locale", 0, 16),
	text("timeZone", 0, 64),
	enum("gender", []string{"m", "f"}),
	of("avatarUrl", URI),
	of("signedUpAt", DateTime),
	of("birthdayAt", DateTime),
	of("lastActivityAt", DateTime),
	of("lastCustomerActivityAt", DateTime),
	of("lastSeenAt", DateTime),
	of("createdAt", DateTime),
	of("importedAt", DateTime),
	list("externalIds", MaxArrayItems, ExternalIDItem),
	list("sharedExternalIds", MaxArrayItems, ExternalIDItem),
	list("emails", MaxArrayItems, EmailItem),
	list("sharedEmails", MaxArrayItems, EmailItem),
	list("phones", MaxArrayItems, PhoneItem),
	list("sharedPhones", MaxArrayItems, PhoneItem),
	list("whatsapps", MaxArrayItems, PhoneItem),
	list("socials", MaxArrayItems, SocialItem),
	list("sharedSocials", MaxArrayItems, SocialItem),
	list("urls", MaxArrayItems, URLItem),
	list("locations", MaxArrayItems, LocationItem),
	{Name: "tags", Kind: List, Max: MaxTags, Elem: &Field{Kind: Text, Min: 1, Max: 256}},
	of("custom", Custom),
}}

// ValidEmail reports whether s is an address Kustomer accepts: the addr-spec
// form JSON Schema's "email" format accepts, a dot-atom local part (at most
// 64 characters) and a domain of at least two labels, at most
// [MaxEmailLen] characters in all. Letters may be of either case.
func ValidEmail(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at > 64 || len(s)-at-1 < 3 || len(s) > MaxEmailLen {
		return false
	}
	local, domain := s[:at], s[at+1:]
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return false
	}
	for i := 0; i < len(local); i++ {
		ch := local[i]
		if !isAlnum(ch) && !strings.ContainsRune(".!#$%&'*+/=?^_`{|}~-", rune(ch)) {
			return false
		}
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if !isAlnum(l[i]) && l[i] != '-' {
				return false
			}
		}
	}
	return true
}

// ValidE164 reports whether s has the E.164 form Kustomer documents: "+",
// a country code not starting with 0, 2 to 15 digits in all.
func ValidE164(s string) bool {
	if len(s) < 3 || len(s) > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9' {
		return false
	}
	for i := 2; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// CustomSuffixes are the key suffixes Kustomer accepts in custom; each sets
// its value's type: Str and Txt text (at most [MaxCustomText] characters),
// Num a number, At a date-time, Bool a boolean, Url a URI.
var CustomSuffixes = []string{"Str", "Txt", "Num", "At", "Bool", "Url"}

// CustomKeyRule says in words what [CustomSuffix] checks, for messages.
const CustomKeyRule = "Kustomer accepts custom keys in camelCase ending in their type: a lowercase letter, then letters and digits, then Str, Txt, Num, At, Bool or Url (e.g. sourceStr)"

// CustomSuffix returns the type suffix of a custom key, or "" when Kustomer
// would refuse the key: camelCase, that is a lowercase ASCII letter, then
// ASCII letters and digits, then the suffix ("sourceStr", "utm2Str"; not
// "SourceStr", "source_str" or "Str").
func CustomSuffix(key string) string {
	for _, s := range CustomSuffixes {
		if len(key) <= len(s) || !strings.HasSuffix(key, s) {
			continue
		}
		if key[0] < 'a' || key[0] > 'z' {
			return ""
		}
		for i := 1; i < len(key)-len(s); i++ {
			if !isAlnum(key[i]) {
				return ""
			}
		}
		return s
	}
	return ""
}

func isAlnum(ch byte) bool {
	return ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9'
}
