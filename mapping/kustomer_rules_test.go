package mapping_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// TestCustomKeyRuleAgreesWithTheSandbox: a custom key the mapping lets through is one Kustomer (the
// sandbox) accepts, and one it refuses is one Kustomer would refuse, so no request is spent on it.
func TestCustomKeyRuleAgreesWithTheSandbox(t *testing.T) {
	t.Parallel()
	w := oneInput(t, `custom: "{{trigger.custom}}"`)
	client := kustomertest.New(t, sandbox.Config{}).Client(t, kustomer.Config{})
	keys := map[string]bool{
		"sourceStr": true, "utm2Str": true, "notesTxt": true, "scoreNum": true, "seenAt": true, "vipBool": true,
		"siteUrl": true, "aStr": true, "leadSourceIDStr": true,
		"BadStr": false, "Str": false, "lead_sourceStr": false, "lead-sourceStr": false, "2fastStr": false,
		"sourcestr": false, "source": false, "sourceStr ": false, "sourceÄStr": false,
	}
	for key, valid := range keys {
		req, err := w.Map(map[string]any{"custom": map[string]any{key: value(key)}}, nil, 0)
		if valid {
			require.NoError(t, err, key)
		} else {
			require.Equal(t, outcome.Validation, mapping.KindOf(err), key)
			require.ErrorContains(t, err, "Kustomer accepts custom keys in camelCase", key)
		}
		sandboxAgrees(t, client, key, err, req, map[string]any{"custom": map[string]any{key: value(key)}})
	}
}

// oneInput is the workflow "a" with one input, input (YAML).
func oneInput(t *testing.T, input string) *mapping.Workflow {
	t.Helper()
	cfg, err := mapping.Parse("w.yaml", []byte("workflows:\n  - name: a\n    inputs:\n      "+input+"\n"))
	require.NoError(t, err, input)
	return cfg.Workflows[0]
}

// sandboxAgrees wants the sandbox to accept or refuse what the mapping did
// with an input (name): when the mapping refused it (mapErr), the sandbox
// refuses the input as given (raw) as a permanent failure; when it accepted
// it, the sandbox accepts the mapped request (req).
func sandboxAgrees(t *testing.T, client *kustomer.Client, name string, mapErr error, req mapping.Request, raw map[string]any) {
	t.Helper()
	if mapErr != nil {
		_, err := client.CreateCustomer(t.Context(), raw)
		require.Error(t, err, "the sandbox refuses %q too", name)
		require.Equal(t, kustomer.ClassPermanent, kustomer.ClassOf(err), name)
		return
	}
	_, err := client.CreateCustomer(t.Context(), req)
	require.NoError(t, err, "the sandbox accepts %q too", name)
}

func value(key string) any {
	switch {
	case len(key) > 3 && key[len(key)-3:] == "Num":
		return 1
	case len(key) > 2 && key[len(key)-2:] == "At":
		return "2026-01-02T03:04:05Z"
	case len(key) > 4 && key[len(key)-4:] == "Bool":
		return true
	case len(key) > 3 && key[len(key)-3:] == "Url":
		return "https://example.com"
	}
	return "x"
}

func TestParseRefusesACustomKeyKustomerWouldRefuse(t *testing.T) {
	t.Parallel()
	_, err := mapping.Parse("w.yaml", []byte("workflows:\n  - name: a\n    inputs:\n      custom:\n        BadStr: x\n"))
	require.ErrorContains(t, err, `w.yaml:5:9: workflow "a": custom key "BadStr": Kustomer accepts custom keys in camelCase`)
}

// TestMapStripsControlCharactersFromText: NUL and other control characters never reach Kustomer; a
// multi-line Txt keeps its line breaks and tabs, one-line text turns them into spaces.
func TestMapStripsControlCharactersFromText(t *testing.T) {
	t.Parallel()
	cfg, err := mapping.Parse("w.yaml", []byte(`workflows:
  - name: a
    inputs:
      name: "{{trigger.name}}"
      emails: "{{trigger.email}}"
      tags: "{{trigger.tags}}"
      custom:
        notesTxt: "{{trigger.notes}}"
        sourceStr: "{{trigger.source}}"
`))
	require.NoError(t, err)
	req, err := cfg.Workflows[0].Map(map[string]any{
		"name":   "Ja\u0000ne\tDoe\r\n\u0007",
		"email":  "jane\u0000@example.com",
		"tags":   []any{"v\u001bip", "\u0085"},
		"notes":  "line 1\r\nline\t2\u0000\rline 3\u009f\u007f",
		"source": "web\nform\u200b",
	}, nil, 0)
	require.NoError(t, err)
	require.Equal(t, mapping.Request{
		"name":   "Jane Doe",
		"emails": []any{map[string]any{"email": "jane@example.com", "type": "home"}},
		"tags":   []any{"vip"},
		"custom": map[string]any{"notesTxt": "line 1\nline\t2\nline 3", "sourceStr": "web form\u200b"},
	}, req)
}

// TestEmailCheckAgreesWithTheSandbox: the mapping and the sandbox read one schema (kustomer/schema), so
// an address the mapping lets through is one the sandbox accepts, and one it refuses the sandbox refuses.
func TestEmailCheckAgreesWithTheSandbox(t *testing.T) {
	t.Parallel()
	w := oneInput(t, `emails: "{{trigger.email}}"`)
	client := kustomertest.New(t, sandbox.Config{}).Client(t, kustomer.Config{})
	addrs := map[string]bool{
		"ada@example.com": true, "Ada.Lovelace@Example.COM": true, "a+tag@mail.example.co.uk": true,
		"o'brien@example.ie": true, "x_y-z@sub-domain.example.org": true, "1@2.io": true,
		"plain": false, "@example.com": false, "ada@": false, "ada@localhost": false, "ada@example": false,
		"ada@@example.com": false, "ada..l@example.com": false, ".ada@example.com": false, "ada.@example.com": false,
		"ada@-example.com": false, "ada@example-.com": false, "ada@exa_mple.com": false, "ada@example..com": false,
		"Ada <ada@example.com>": false, `"ada l"@example.com`: false, "ada@[127.0.0.1]": false,
		"ada lovelace@example.com": false, "adé@example.com": false,
		strings.Repeat("a", 65) + "@example.com": false, "a@" + strings.Repeat("b", 250) + ".com": false,
	}
	for addr, valid := range addrs {
		req, err := w.Map(map[string]any{"email": addr}, nil, 0)
		asGiven := map[string]any{"emails": []any{map[string]any{"email": addr}}}
		if !valid {
			require.ErrorContains(t, err, "is not an email address", addr)
			sandboxAgrees(t, client, addr, err, req, asGiven)
			continue
		}
		require.NoError(t, err, addr)
		sandboxAgrees(t, client, addr, err, req, asGiven)
		_, serr := client.CreateCustomer(t.Context(), asGiven)
		require.NoError(t, serr, "the sandbox accepts %q as given too", addr)
	}
}

// TestArrayItemKeysAgreeWithTheSandbox: every key the mapping accepts in an array item is one Kustomer's
// schema has, so a mapped request is never refused for an unknown key (locations once took "locality").
func TestArrayItemKeysAgreeWithTheSandbox(t *testing.T) {
	t.Parallel()
	cfg, err := mapping.Parse("w.yaml", []byte(`workflows:
  - name: a
    inputs:
      externalIds: [{externalId: "{{trigger.id}}", verified: true}]
      phones: [{phone: "+14155550100", type: work, verified: true}]
      urls: [{url: "https://ada.example.com", type: blog}]
      socials: [{type: twitter, userid: "42", username: ada, url: "https://x.example.com/ada", verified: false}]
      locations:
        - {type: work, name: Office, address: 1 Main St, address2: Floor 2, address3: Desk 9, cityName: Boston,
           regionName: Massachusetts, regionCode: MA, zipCode: "02108", countryName: United States,
           countryCode: US, latitude: 42.36, longitude: -71.06}
`))
	require.NoError(t, err)
	client := kustomertest.New(t, sandbox.Config{}).Client(t, kustomer.Config{})
	req, err := cfg.Workflows[0].Map(map[string]any{"id": "lead-1"}, nil, 0)
	require.NoError(t, err)
	_, err = client.CreateCustomer(t.Context(), req)
	require.NoError(t, err)

	for _, in := range []string{
		`locations: [{type: home, locality: Boston}]`,
		`urls: [{url: "https://a.example.com", type: homepage}]`,
		`socials: [{type: myspace, username: ada}]`,
	} {
		_, err := oneInput(t, in).Map(map[string]any{}, nil, 0)
		require.Equal(t, outcome.Validation, mapping.KindOf(err), in)
	}
}
