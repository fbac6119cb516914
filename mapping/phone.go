package mapping

import (
	"strconv"
	"strings"
	"sync"

	"github.com/nyaruka/phonenumbers"
)

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
