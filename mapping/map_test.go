package mapping

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

func mustWorkflow(t testing.TB, body string) *Workflow {
	t.Helper()
	cfg, err := Parse("test.yaml", []byte("workflows:\n  - name: test"+body+"\n"))
	require.NoError(t, err)
	return cfg.Workflows[0]
}

func TestItemsWithoutLoopIsOneNilItem(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, seedInputs)
	items, err := w.Items(map[string]any{"leads": []any{1, 2}})
	require.NoError(t, err)
	require.Equal(t, []any{nil}, items)
}

func TestItemsReturnsTheLoopArray(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, "\n    loop: \"{{filter(trigger.leads, .ok)}}\"")
	items, err := w.Items(map[string]any{"leads": []any{map[string]any{"ok": true, "n": 1}, map[string]any{"ok": false}}})
	require.NoError(t, err)
	require.Equal(t, []any{map[string]any{"ok": true, "n": 1}}, items)
}

func TestItemsOfAMissingLoopArrayIsAnInvalidEvent(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, "\n    loop: \"{{trigger.batch.leads}}\"")
	for _, trigger := range []map[string]any{{}, {"batch": map[string]any{"leads": nil}}} {
		_, err := w.Items(trigger)
		require.EqualError(t, err, `mapping: loop: the event has no array there (the value is missing or null; send [] for a batch with no items) (template "{{trigger.batch.leads}}")`)
		require.Equal(t, outcome.InvalidEvent, KindOf(err))
	}
}

func TestItemsOfAnEmptyLoopArrayIsNoItems(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, "\n    loop: \"{{trigger.batch.leads}}\"")
	items, err := w.Items(map[string]any{"batch": map[string]any{"leads": []any{}}})
	require.NoError(t, err)
	require.Empty(t, items)
}

func TestItemsRefusesALoopValueThatIsNotAnArray(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, "\n    loop: \"{{trigger.leads}}\"")
	_, err := w.Items(map[string]any{"leads": "Jane"})
	require.EqualError(t, err, `mapping: loop: expected an array, got a string (template "{{trigger.leads}}")`)
	require.Equal(t, outcome.InvalidEvent, KindOf(err))
}

func TestItemsRefusesMoreThanMaxItems(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, "\n    loop: \"{{trigger.leads}}\"\n    max_items: 2")
	_, err := w.Items(map[string]any{"leads": []any{1, 2, 3}})
	require.EqualError(t, err, `mapping: loop: 3 items, at most 2 allowed (max_items)`)
	require.Equal(t, outcome.Validation, KindOf(err))
}

func TestIdempotencyKeyPrefersTheTemplateThenExternalID(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, "\n    idempotency_key: \"{{trigger.id}}\"")
	key, err := w.IdempotencyKey(map[string]any{"id": 42}, nil, 0, Request{"externalId": "ext"})
	require.NoError(t, err)
	require.Equal(t, "42", key)

	key, err = w.IdempotencyKey(map[string]any{}, nil, 0, Request{"externalId": "ext"})
	require.NoError(t, err)
	require.Equal(t, "ext", key, "a blank key falls back to externalId")

	plain := mustWorkflow(t, "")
	key, err = plain.IdempotencyKey(nil, nil, 0, Request{})
	require.NoError(t, err)
	require.Empty(t, key, "no key and no externalId: the caller uses the message id")

	_, err = w.IdempotencyKey(map[string]any{"id": []any{1}}, nil, 0, Request{})
	require.EqualError(t, err, `mapping: idempotency_key: expected text, got an array (template "{{trigger.id}}")`)
}

func TestMapFailureKindAndErrorsAreUsableWithErrorsAs(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, seedInputs)
	_, err := w.Map(map[string]any{"emails": "nope", "phones": "x"}, nil, 0)
	var es Errors
	require.ErrorAs(t, err, &es)
	require.Len(t, es, 2)
	require.Equal(t, outcome.Validation, es.Kind())
	var first *Error
	require.ErrorAs(t, err, &first)
	require.Equal(t, &Error{Kind: outcome.Validation, Field: "emails[0].email", Template: "{{trigger.emails}}",
		Msg: `"nope" is not an email address`}, first)
	require.Equal(t, outcome.Validation, KindOf(fmt.Errorf("worker: item 3: %w", err)))
	require.Equal(t, outcome.None, KindOf(errors.New("other")))
	require.Equal(t, outcome.None, Errors(nil).Kind())
}

func TestMapOfOneFailureIsAnErrorNotErrors(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, seedInputs)
	_, err := w.Map(map[string]any{"emails": "nope"}, nil, 0)
	_, isOne := err.(*Error)
	require.True(t, isOne)
	require.EqualError(t, err, `mapping: emails[0].email: "nope" is not an email address`)
}

func TestMapIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, "\n    loop: \"{{trigger.leads}}\""+in(`name: "{{item.name}} #{{loop.index}}"`)+"\n      emails: \"{{item.email}}\"")
	leads := make([]any, 64)
	for i := range leads {
		leads[i] = map[string]any{"name": fmt.Sprint("n", i), "email": fmt.Sprintf("U%d@X.com", i)}
	}
	trigger := map[string]any{"leads": leads}
	items, err := w.Items(trigger)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i, item := range items {
		wg.Go(func() {
			req, err := w.Map(trigger, item, i)
			if !(err == nil && req["name"] == fmt.Sprintf("n%d #%d", i, i)) {
				t.Errorf("item %d: %v %v", i, req, err)
			}
		})
	}
	wg.Wait()
}

func ExampleWorkflow_Map() {
	cfg, err := Parse("example.yaml", []byte(`
workflows:
  - name: leads
    inputs:
      name: "{{trigger.name}}"
      emails: "{{trigger.emails}}"
      phones: "{{trigger.phones}}"
      custom:
        sourceStr: web-form
        scoreNum: "{{trigger.score}}"
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	w, _ := cfg.Workflow("leads")
	var event map[string]any
	_ = json.Unmarshal([]byte(`{"name": " Jane Doe ", "emails": ["Jane@X.com", "jane@x.com"], "phones": "(555) 555-0100", "score": "42"}`), &event)

	req, err := w.Map(event, nil, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := json.Marshal(req)
	fmt.Println(string(body))

	_, err = w.Map(map[string]any{"emails": []any{"a@x.com", "not-an-email"}}, nil, 0)
	fmt.Println(err, "|", KindOf(err))
	// Output:
	// {"custom":{"scoreNum":42,"sourceStr":"web-form"},"emails":[{"email":"jane@x.com","type":"home"}],"name":"Jane Doe","phones":[{"phone":"+15555550100","type":"mobile"}]}
	// mapping: emails[1].email: "not-an-email" is not an email address | validation
}

// FuzzMap: compile, evaluate and validate never panic, whatever the event holds, and a successful
// result always survives a JSON round trip.
func FuzzMap(f *testing.F) {
	cfg, err := Parse("fuzz.yaml", []byte(`
workflows:
  - name: fuzz
    loop: "{{trigger.leads ?? [trigger]}}"
    idempotency_key: "{{item.id}}"
    inputs:
      name: "{{item.name}} {{upper(string(item.last ?? ''))}}"
      externalId: "{{item.id}}"
      externalIds: "{{item.ids}}"
      emails: "{{item.emails ?? item.email}}"
      sharedEmails: "{{item.shared}}"
      phones: "{{item.phones ?? item.phone}}"
      tags: "{{item.tags}}"
      urls: "{{item.urls}}"
      socials: "{{item.socials}}"
      locations: "{{item.locations}}"
      birthdayAt: "{{item.birthday}}"
      avatarUrl: "{{item.avatar}}"
      locale: "{{item.locale}}"
      custom: "{{item.custom}}"
`))
	if err != nil {
		f.Fatal(err)
	}
	w := cfg.Workflows[0]
	for _, seed := range []string{
		`{"name":"Jane","emails":[{"email":"jane@x.com"}],"phones":[{"phone":"+15555550100"}]}`,
		`{"leads":[{"id":1,"email":"A@x.com","phone":"(555) 555-0100","custom":{"aNum":"1","bAt":"2024-01-01"}}]}`,
		`{"leads":"x"}`,
		`{"leads":[null,[],{"emails":[{"email":{"x":1}}],"tags":[[1]],"socials":[{}],"locations":[{"latitude":"1e400"}]}]}`,
		`{"phone":"+99999999999999999999","birthday":-1e300,"custom":{"At":1,"xBool":2}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var trigger map[string]any
		if json.Unmarshal(data, &trigger) != nil {
			return
		}
		items, err := w.Items(trigger)
		if err != nil {
			require.NotEmpty(t, KindOf(err))
			return
		}
		for i, item := range items {
			req, err := w.Map(trigger, item, i)
			if err != nil {
				require.NotEmpty(t, KindOf(err), "%v", err)
				continue
			}
			body, err := json.Marshal(req)
			require.NoError(t, err)
			var back Request
			require.NoError(t, json.Unmarshal(body, &back))
			_, _ = w.IdempotencyKey(trigger, item, i, req)
		}
	})
}

func BenchmarkMapTypicalLead(b *testing.B) {
	w, _ := DefaultConfig().Workflow(DefaultWorkflowName)
	var trigger map[string]any
	if err := json.Unmarshal([]byte(`{"name":"Jane Doe","emails":[{"email":"jane@x.com"}],"phones":[{"phone":"+15555550100"}]}`), &trigger); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.Map(trigger, nil, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMapLeadWithNationalPhoneAndCustom(b *testing.B) {
	w := mustWorkflow(b, seedInputs+"\n      externalId: \"{{trigger.id}}\"\n      custom:\n        sourceStr: web-form\n        scoreNum: \"{{trigger.score}}\"")
	trigger := map[string]any{"id": "lead-1", "name": " Jane Doe ", "emails": "Jane@X.com", "phones": "(555) 555-0100", "score": "42"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.Map(trigger, nil, 0); err != nil {
			b.Fatal(err)
		}
	}
}
