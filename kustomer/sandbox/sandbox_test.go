package sandbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
)

func newSandbox(t *testing.T, cfg sandbox.Config) *sandbox.Sandbox {
	t.Helper()
	sb, err := sandbox.New(cfg)
	require.NoError(t, err)
	t.Cleanup(sb.Close)
	return sb
}

func call(t *testing.T, sb *sandbox.Sandbox, method, path, body string, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	return callCtx(t, context.Background(), sb, method, path, body, headers...)
}

func callCtx(t *testing.T, ctx context.Context, sb *sandbox.Sandbox, method, path, body string, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(ctx, method, path, strings.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	sb.ServeHTTP(rec, req)
	return rec
}

func decode(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &m), rec.Body.String())
	return m
}

// firstError returns errors[0] of an error body.
func firstError(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	errs, ok := decode(t, rec)["errors"].([]any)
	require.True(t, ok, rec.Body.String())
	require.NotEmpty(t, errs)
	return errs[0].(map[string]any)
}

func TestCreateValidatesClosedSchema(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("a", n) }
	emails := func(n int) string {
		var items []string
		for i := range n {
			items = append(items, fmt.Sprintf(`{"email":"u%d@example.com"}`, i))
		}
		return "[" + strings.Join(items, ",") + "]"
	}
	tags := func(n int) string {
		var items []string
		for i := range n {
			items = append(items, strconv.Quote("tag"+strconv.Itoa(i)))
		}
		return "[" + strings.Join(items, ",") + "]"
	}
	customKeys := func(n int) string {
		var items []string
		for i := range n {
			items = append(items, fmt.Sprintf(`"k%dStr":"v"`, i))
		}
		return "{" + strings.Join(items, ",") + "}"
	}
	cases := []struct {
		name, body, pointer string
	}{
		{"unknown top-level key", `{"nickname":"x"}`, "/nickname"},
		{"unknown key inside email item", `{"emails":[{"email":"a@b.co","primary":true}]}`, "/emails/0/primary"},
		{"missing email in item", `{"emails":[{"type":"work"}]}`, "/emails/0/email"},
		{"more than 10 emails", `{"emails":` + emails(11) + `}`, "/emails"},
		{"non-unique phones", `{"phones":[{"phone":"+14155550100"},{"phone":"+14155550100"}]}`, "/phones"},
		{"more than 20 tags", `{"tags":` + tags(21) + `}`, "/tags"},
		{"more than 100 custom keys", `{"custom":` + customKeys(101) + `}`, "/custom"},
		{"bad email syntax", `{"emails":[{"email":"a@b.co"},{"email":"a@b.co2"},{"email":"x"},{"email":"not an email"}]}`, "/emails/2/email"},
		{"email with display name", `{"emails":[{"email":"Jane <jane@example.com>"}]}`, "/emails/0/email"},
		{"phone not E.164", `{"phones":[{"phone":"(415) 555-0100"}]}`, "/phones/0/phone"},
		{"bad email type", `{"emails":[{"email":"a@b.co","type":"mobile"}]}`, "/emails/0/type"},
		{"bad phone type", `{"phones":[{"phone":"+14155550100","type":"cell"}]}`, "/phones/0/type"},
		{"name too long", `{"name":"` + long(257) + `"}`, "/name"},
		{"empty externalId", `{"externalId":""}`, "/externalId"},
		{"externalId too long", `{"externalId":"` + long(257) + `"}`, "/externalId"},
		{"username too long", `{"username":"` + long(257) + `"}`, "/username"},
		{"locale too long", `{"locale":"` + long(17) + `"}`, "/locale"},
		{"timeZone too long", `{"timeZone":"` + long(65) + `"}`, "/timeZone"},
		{"lower-case timezone key", `{"timezone":"UTC"}`, "/timezone"},
		{"custom key without suffix", `{"custom":{"tier":"gold"}}`, "/custom/tier"},
		{"custom key with a capital first letter", `{"custom":{"BadStr":"x"}}`, "/custom/BadStr"},
		{"custom key with an underscore", `{"custom":{"lead_sourceStr":"x"}}`, "/custom/lead_sourceStr"},
		{"custom key that is only a suffix", `{"custom":{"Str":"x"}}`, "/custom/Str"},
		{"custom Str too long", `{"custom":{"noteStr":"` + long(1025) + `"}}`, "/custom/noteStr"},
		{"custom Txt not a string", `{"custom":{"noteTxt":5}}`, "/custom/noteTxt"},
		{"custom Num not a number", `{"custom":{"scoreNum":"5"}}`, "/custom/scoreNum"},
		{"custom At not a date-time", `{"custom":{"seenAt":"yesterday"}}`, "/custom/seenAt"},
		{"custom Bool not a boolean", `{"custom":{"vipBool":"true"}}`, "/custom/vipBool"},
		{"custom Url not a URI", `{"custom":{"siteUrl":"example.com"}}`, "/custom/siteUrl"},
		{"name not a string", `{"name":5}`, "/name"},
		{"emails not an array", `{"emails":{"email":"a@b.co"}}`, "/emails"},
		{"verified not a boolean", `{"emails":[{"email":"a@b.co","verified":"yes"}]}`, "/emails/0/verified"},
		{"signedUpAt not a date-time", `{"signedUpAt":"2026-13-01"}`, "/signedUpAt"},
		{"avatarUrl relative", `{"avatarUrl":"/me.png"}`, "/avatarUrl"},
		{"bad url item", `{"urls":[{"url":"nope"}]}`, "/urls/0/url"},
		{"unknown key in location", `{"locations":[{"city":"Paris"}]}`, "/locations/0/city"},
		{"bad social type", `{"socials":[{"type":"myspace","username":"x"}]}`, "/socials/0/type"},
		{"_clientRef outside bulk", `{"_clientRef":"r1"}`, "/_clientRef"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sb := newSandbox(t, sandbox.Config{})
			rec := call(t, sb, http.MethodPost, "/v1/customers", tc.body)
			require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
			e := firstError(t, rec)
			require.EqualValues(t, 400, e["status"])
			require.Equal(t, "badparam", e["code"])
			require.NotEmpty(t, e["title"])
			require.Equal(t, tc.pointer, e["source"].(map[string]any)["pointer"], rec.Body.String())
			require.Empty(t, sb.Customers())
			require.Equal(t, 1, sb.Stats().BadRequests)
		})
	}
}

func TestCreateAcceptsEveryDocumentedInput(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	body := `{
		"name": "Jane Doe", "company": "5f1b2c3d4e5f6a7b8c9d0e1f", "externalId": "lead-1", "username": "jane",
		"locale": "en_US", "timeZone": "Europe/Paris", "avatarUrl": "https://example.com/a.png",
		"signedUpAt": "2026-05-01T10:00:00Z", "birthdayAt": "1990-01-02T00:00:00.000Z",
		"externalIds": [{"externalId": "crm-1", "verified": true}], "sharedExternalIds": [{"externalId": "x-1"}],
		"emails": [{"email": "jane@example.com", "type": "work", "verified": true}, {"email": "j@x.io", "type": "home"}],
		"sharedEmails": [{"email": "team@example.com", "type": "other"}],
		"phones": [{"phone": "+14155550100", "type": "mobile", "verified": false}],
		"sharedPhones": [{"phone": "+442071838750", "type": "work"}],
		"whatsapps": [{"phone": "+14155550101"}],
		"socials": [{"type": "twitter", "username": "jane", "url": "https://twitter.com/jane"}],
		"urls": [{"url": "https://jane.example.com", "type": "website"}],
		"locations": [{"type": "home", "name": "Home", "cityName": "Paris", "latitude": 48.85, "longitude": 2.35}],
		"tags": ["5f1b2c3d4e5f6a7b8c9d0e1f"],
		"custom": {"tierStr": "gold", "notesTxt": null, "scoreNum": 4.5, "seenAt": "2026-05-01T10:00:00+02:00",
		           "vipBool": true, "siteUrl": "https://example.com"}
	}`
	rec := call(t, sb, http.MethodPost, "/v1/customers", body)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
}

func TestCreateAnswers201WithKustomerDataShape(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC))
	sb := newSandbox(t, sandbox.Config{Now: clock.Now})
	rec := call(t, sb, http.MethodPost, "/v1/customers",
		`{"externalId":"lead-7","emails":[{"email":"jane@example.com"}],"custom":{"tierStr":"gold"}}`)
	require.Equal(t, http.StatusCreated, rec.Code)
	require.Contains(t, rec.Header().Get("Content-Type"), "application/json")

	data := decode(t, rec)["data"].(map[string]any)
	require.Equal(t, "customer", data["type"])
	id := data["id"].(string)
	require.Regexp(t, `^[0-9a-f]{24}$`, id)
	require.Equal(t, map[string]any{"self": "/v1/customers/" + id}, data["links"])

	attrs := data["attributes"].(map[string]any)
	require.Equal(t, "lead-7", attrs["externalId"])
	require.Equal(t, "jane@example.com", attrs["displayName"], "no name: the first email is shown")
	require.Equal(t, "2026-05-24T12:00:00.000Z", attrs["createdAt"])
	require.Equal(t, attrs["createdAt"], attrs["updatedAt"])
	require.Equal(t, map[string]any{"tierStr": "gold"}, attrs["custom"])
	email := attrs["emails"].([]any)[0].(map[string]any)
	require.Equal(t, "jane@example.com", email["email"])
	require.Regexp(t, `^[0-9a-f]{24}$`, email["id"])

	custs := sb.Customers()
	require.Len(t, custs, 1)
	require.Equal(t, id, custs[0].ID)
	require.Equal(t, clock.Now(), custs[0].CreatedAt)
	require.Equal(t, attrs, custs[0].Attributes)

	custs[0].Attributes["externalId"] = "mutated"
	require.Equal(t, "lead-7", sb.Customers()[0].Attributes["externalId"], "Customers returns copies")
}

func TestLookUpFindsCustomerByExternalIDIDEmailAndPhone(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	id := createCustomer(t, sb,
		`{"name":"Jane","externalId":"crm/42 x","emails":[{"email":"Jane@Example.com"}],"phones":[{"phone":"+14155550100"}]}`)

	for _, path := range []string{
		"/v1/customers/externalId=crm%2F42%20x",
		"/v1/customers/" + id,
		"/v1/customers/email=jane%40example.com",
		"/v1/customers/phone=%2B14155550100",
	} {
		rec := call(t, sb, http.MethodGet, path, "")
		require.Equal(t, http.StatusOK, rec.Code, path)
		data := decode(t, rec)["data"].(map[string]any)
		require.Equal(t, id, data["id"], path)
		require.Equal(t, "Jane", data["attributes"].(map[string]any)["name"])
	}

	rec := call(t, sb, http.MethodGet, "/v1/customers/externalId=absent", "")
	require.Equal(t, http.StatusNotFound, rec.Code)
	require.JSONEq(t, `{"errors":[{"status":404,"code":"notfound","title":"Not Found"}]}`, rec.Body.String())
	require.Equal(t, 5, sb.Stats().Lookups)
}

func TestUnknownRouteIs404AndBadJSONIs400(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	require.Equal(t, http.StatusNotFound, call(t, sb, http.MethodGet, "/v1/conversations", "").Code)
	require.Equal(t, http.StatusNotFound, call(t, sb, http.MethodDelete, "/v1/customers", "").Code)
	require.Equal(t, http.StatusNotFound, call(t, sb, http.MethodGet, "/v1/customers/nickname=x", "").Code)

	for _, body := range []string{`{"name":`, `["not","an","object"]`, `{"name":"a"} {"name":"b"}`, ``} {
		rec := call(t, sb, http.MethodPost, "/v1/customers", body)
		require.Equal(t, http.StatusBadRequest, rec.Code, body)
		require.Equal(t, "badparam", firstError(t, rec)["code"])
	}
}

func TestRateLimitSpendsOneUnitPerRequestAndResetsAtWindowEnd(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC)
	clock := looptest.NewFakeClock(start)
	sb := newSandbox(t, sandbox.Config{RatePerMinute: 3, Now: clock.Now})
	windowEnd := strconv.FormatInt(start.Add(time.Minute).Unix(), 10)

	// A 400 and a 404 spend units too.
	for i, path := range []string{"/v1/customers", "/v1/customers", "/v1/customers/externalId=x"} {
		body := `{"name":"ok"}`
		if i == 1 {
			body = `{"bad":1}`
		}
		method := http.MethodPost
		if strings.Contains(path, "=") {
			method = http.MethodGet
		}
		rec := call(t, sb, method, path, body)
		require.NotEqual(t, http.StatusTooManyRequests, rec.Code)
		require.Equal(t, "3", rec.Header().Get("X-Ratelimit-Limit"))
		require.Equal(t, strconv.Itoa(2-i), rec.Header().Get("X-Ratelimit-Remaining"))
		require.Equal(t, windowEnd, rec.Header().Get("X-Ratelimit-Reset"))
	}

	clock.Advance(19*time.Second + 500*time.Millisecond)
	rec := call(t, sb, http.MethodPost, "/v1/customers", `{"name":"over"}`)
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, "41", rec.Header().Get("Retry-After"), "40.5 s rounded up")
	require.Equal(t, "0", rec.Header().Get("X-Ratelimit-Remaining"))
	require.Equal(t, windowEnd, rec.Header().Get("X-Ratelimit-Reset"))
	e := firstError(t, rec)
	require.Equal(t, "rateLimited", e["code"])
	require.NotEmpty(t, e["message"])
	require.Len(t, sb.Customers(), 1, "a 429 stores nothing")
	require.Equal(t, 1, sb.Stats().RateLimited)

	clock.Advance(40500 * time.Millisecond)
	rec = call(t, sb, http.MethodPost, "/v1/customers", `{"name":"next window"}`)
	require.Equal(t, http.StatusCreated, rec.Code)
	require.Equal(t, "2", rec.Header().Get("X-Ratelimit-Remaining"))
	require.Equal(t, strconv.FormatInt(start.Add(2*time.Minute).Unix(), 10), rec.Header().Get("X-Ratelimit-Reset"))
}

func TestNegativeRateIsUnlimitedWithoutHeaders(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{RatePerMinute: -1})
	for range 1500 {
		rec := call(t, sb, http.MethodGet, "/v1/customers/externalId=x", "")
		require.Equal(t, http.StatusNotFound, rec.Code)
		require.Empty(t, rec.Header().Get("X-Ratelimit-Limit"))
	}
}

func TestAPIKeyIsRequiredWhenConfigured(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{APIKey: "secret"})
	for _, auth := range []string{"", "Bearer wrong", "secret", "Basic secret"} {
		rec := call(t, sb, http.MethodPost, "/v1/customers", `{"name":"x"}`, "Authorization", auth)
		require.Equal(t, http.StatusUnauthorized, rec.Code, auth)
		e := firstError(t, rec)
		require.Equal(t, "unauthorized", e["code"])
		require.NotEmpty(t, e["message"])
		require.NotContains(t, rec.Body.String(), "secret")
	}
	rec := call(t, sb, http.MethodPost, "/v1/customers", `{"name":"x"}`, "Authorization", "Bearer secret")
	require.Equal(t, http.StatusCreated, rec.Code)
	require.Equal(t, 4, sb.Stats().Unauthorized)
	require.Len(t, sb.Customers(), 1)
}

func TestOutageAndErrorRateAnswer503BeforeAnythingElse(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{RatePerMinute: 5, Outage: true})
	rec := call(t, sb, http.MethodPost, "/v1/customers", `{"name":"x"}`)
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Equal(t, "serviceUnavailable", firstError(t, rec)["code"])
	require.Equal(t, "5", rec.Header().Get("X-Ratelimit-Remaining"), "an injected 503 spends no unit")

	sb.SetFaults(sandbox.Faults{ErrorRate: 1})
	require.Equal(t, http.StatusServiceUnavailable, call(t, sb, http.MethodPost, "/v1/customers", `{"name":"x"}`).Code)

	sb.SetFaults(sandbox.Faults{})
	require.Equal(t, http.StatusCreated, call(t, sb, http.MethodPost, "/v1/customers", `{"name":"x"}`).Code)

	st := sb.Stats()
	require.Equal(t, 2, st.ServerErrors)
	require.Equal(t, 3, st.Requests)
	require.Equal(t, 1, st.Creates)
}

func TestErrorRateIsDeterministicForASeed(t *testing.T) {
	t.Parallel()
	pattern := func(seed int64) string {
		sb := newSandbox(t, sandbox.Config{ErrorRate: 0.5, Seed: seed, RatePerMinute: -1})
		var b strings.Builder
		for range 64 {
			if call(t, sb, http.MethodGet, "/v1/customers/externalId=x", "").Code == http.StatusServiceUnavailable {
				b.WriteByte('E')
			} else {
				b.WriteByte('.')
			}
		}
		return b.String()
	}
	a := pattern(0)
	require.Equal(t, a, pattern(0))
	require.Contains(t, a, "E")
	require.Contains(t, a, ".")
	require.NotEqual(t, a, pattern(42))
}

func TestTimeoutRateStoresCustomerAndWithholdsAnswerUntilClientGivesUp(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{TimeoutRate: 1})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- callCtx(t, ctx, sb, http.MethodPost, "/v1/customers", `{"externalId":"lead-1"}`) }()

	require.Eventually(t, func() bool { return sb.Stats().Timeouts == 1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 1, sb.CountByExternalID()["lead-1"], "stored before the answer is withheld")
	select {
	case <-done:
		t.Fatal("answered although the create should hang")
	default:
	}
	cancel()
	rec := <-done
	require.Empty(t, rec.Body.String(), "nobody is left to answer")
}

func TestTimeoutHangEndsWith504(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{TimeoutRate: 1, TimeoutHang: 10 * time.Millisecond})
	rec := call(t, sb, http.MethodPost, "/v1/customers", `{"externalId":"lead-1"}`)
	require.Equal(t, http.StatusGatewayTimeout, rec.Code)
	require.Len(t, sb.Customers(), 1)
}

func TestCloseReleasesHangingCreatesWith503(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{TimeoutRate: 1})
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- call(t, sb, http.MethodPost, "/v1/customers", `{"name":"x"}`) }()
	require.Eventually(t, func() bool { return sb.Stats().Timeouts == 1 }, 5*time.Second, time.Millisecond)
	sb.Close()
	require.Equal(t, http.StatusServiceUnavailable, (<-done).Code)
}

func TestLatencyDelaysEveryRequest(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{Latency: 30 * time.Millisecond})
	start := time.Now()
	call(t, sb, http.MethodGet, "/v1/customers/externalId=x", "")
	require.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond)

	sb.SetFaults(sandbox.Faults{})
	require.Zero(t, sb.Faults().Latency)
}

func TestDuplicateExternalIDIsStoredAndCounted(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	for _, ext := range []string{"a", "b", "a", "a"} {
		require.Equal(t, http.StatusCreated, call(t, sb, http.MethodPost, "/v1/customers", `{"externalId":"`+ext+`"}`).Code)
	}
	require.Equal(t, http.StatusCreated, call(t, sb, http.MethodPost, "/v1/customers", `{"name":"no external id"}`).Code)
	require.Equal(t, map[string]int{"a": 3, "b": 1}, sb.CountByExternalID())
	st := sb.Stats()
	require.Equal(t, 2, st.Duplicates)
	require.Equal(t, 5, st.Creates)
	require.Equal(t, 2, st.ExternalIDs, "a and b")

	first := sb.Customers()[0].ID
	rec := call(t, sb, http.MethodGet, "/v1/customers/externalId=a", "")
	require.Equal(t, first, decode(t, rec)["data"].(map[string]any)["id"], "a look-up finds the oldest")
}

func TestSandboxIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{RatePerMinute: 150, ErrorRate: 0.1})
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				ext := fmt.Sprintf("w%d-%d", w, i%20)
				call(t, sb, http.MethodPost, "/v1/customers", `{"externalId":"`+ext+`"}`)
				call(t, sb, http.MethodGet, "/v1/customers/externalId="+ext, "")
				if i == each/2 {
					sb.SetFaults(sandbox.Faults{ErrorRate: 0.2})
				}
				_ = sb.Stats()
				_ = sb.CountByExternalID()
			}
		})
	}
	wg.Wait()
	st := sb.Stats()
	require.Equal(t, 2*workers*each, st.Requests)
	require.Equal(t, st.Requests, st.Creates+st.Lookups+st.ServerErrors+st.RateLimited)
	require.Len(t, sb.Customers(), st.Creates)
	total := 0
	for _, n := range sb.CountByExternalID() {
		total += n
	}
	require.Equal(t, st.Creates, total)
	require.Equal(t, len(sb.CountByExternalID()), st.ExternalIDs)
	require.LessOrEqual(t, st.Creates+st.Lookups, 150, "never more than the window's budget")
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []sandbox.Config{
		{ErrorRate: 1.5}, {TimeoutRate: -0.1}, {Latency: -time.Second}, {Window: -time.Second}, {TimeoutHang: -1},
	} {
		_, err := sandbox.New(cfg)
		require.Error(t, err, "%+v", cfg)
		require.True(t, strings.HasPrefix(err.Error(), "sandbox: "), err.Error())
	}
	sb := newSandbox(t, sandbox.Config{})
	require.Panics(t, func() { sb.SetFaults(sandbox.Faults{ErrorRate: 2}) })
}

func TestListenAndServeServesUntilContextDone(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- sandbox.ListenAndServe(ctx, addr, sandbox.Config{TimeoutRate: 0}, zerolog.Nop()) }()

	require.Eventually(t, func() bool {
		resp, err := http.Post("http://"+addr+"/v1/customers", "application/json", strings.NewReader(`{"name":"x"}`))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusCreated
	}, 5*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-served)
}
