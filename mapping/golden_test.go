package mapping

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// mapCase is one golden test: a workflow (its YAML body after "name:"), an event, optionally a loop item.
type mapCase struct {
	name  string
	wf    string // YAML lines of the workflow, indented by 4 spaces, after "- name: test"
	event string // JSON
	item  string // JSON of the loop item ("" for none)
	index int
}

const seedInputs = `
    inputs:
      name: "{{trigger.name}}"
      emails: "{{trigger.emails}}"
      phones: "{{trigger.phones}}"`

var mapCases = []mapCase{
	// The seed's sample request, as written, with the sample's shapes and with the shapes leads really have.
	{name: "seed_sample", wf: seedInputs,
		event: `{"name":"Jane Doe","emails":[{"email":"jane@x.com"}],"phones":[{"phone":"+15555550100"}]}`},
	{name: "seed_sample_plain_strings", wf: seedInputs,
		event: `{"name":"Jane Doe","emails":"jane@x.com","phones":"(555) 555-0100"}`},
	{name: "seed_sample_blank_event", wf: seedInputs, event: `{}`},
	{name: "seed_sample_extra_event_fields_ignored", wf: seedInputs,
		event: `{"name":"Jane Doe","utm":{"source":"ads"},"emails":["jane@x.com"]}`},

	// Each input of Kustomer's create body.
	{name: "input_name", wf: in(`name: "{{trigger.name}}"`), event: `{"name":"Jane Doe"}`},
	{name: "input_externalId", wf: in(`externalId: "{{trigger.id}}"`), event: `{"id":"lead-42"}`},
	{name: "input_externalIds", wf: in(`externalIds: "{{trigger.ids}}"`), event: `{"ids":["crm-1",{"externalId":"erp-9","verified":true}]}`},
	{name: "input_username", wf: in(`username: "{{trigger.user}}"`), event: `{"user":"jdoe"}`},
	{name: "input_company", wf: in(`company: "{{trigger.company_id}}"`), event: `{"company_id":"5f9b1c2d3e4f5a6b7c8d9e0f"}`},
	{name: "input_locale", wf: in(`locale: "{{trigger.locale}}"`), event: `{"locale":"en_US"}`},
	{name: "input_timeZone", wf: in(`timeZone: "{{trigger.tz}}"`), event: `{"tz":"America/New_York"}`},
	{name: "input_emails", wf: in(`emails: "{{trigger.emails}}"`), event: `{"emails":[{"email":"jane@x.com","type":"work","verified":true},"jane@home.org"]}`},
	{name: "input_sharedEmails", wf: in(`sharedEmails: "{{trigger.shared}}"`), event: `{"shared":"team@x.com"}`},
	{name: "input_phones", wf: in(`phones: "{{trigger.phones}}"`), event: `{"phones":[{"phone":"+44 20 7946 0958","type":"work"},"555-555-0100"]}`},
	{name: "input_sharedPhones", wf: in(`sharedPhones: "{{trigger.shared}}"`), event: `{"shared":"+1 (555) 555-0199"}`},
	{name: "input_urls", wf: in(`urls: "{{trigger.site}}"`), event: `{"site":"https://jane.example.com"}`},
	{name: "input_socials", wf: in(`socials: [{type: twitter, username: "{{trigger.twitter}}"}]`), event: `{"twitter":"janedoe"}`},
	{name: "input_locations", wf: in(`locations: [{type: home, cityName: "{{trigger.city}}", countryCode: US, latitude: "{{trigger.lat}}"}]`), event: `{"city":"Boston","lat":42.36}`},
	{name: "input_tags", wf: in(`tags: "{{trigger.tags}}"`), event: `{"tags":["5f9b1c2d3e4f5a6b7c8d9e0f","vip","vip"]}`},
	{name: "input_avatarUrl", wf: in(`avatarUrl: "{{trigger.avatar}}"`), event: `{"avatar":"https://cdn.example.com/jane.png"}`},
	{name: "input_birthdayAt", wf: in(`birthdayAt: "{{trigger.birthday}}"`), event: `{"birthday":"1990-04-01"}`},
	{name: "input_signedUpAt", wf: in(`signedUpAt: "{{trigger.signed_up}}"`), event: `{"signed_up":1714550400}`},
	{name: "input_custom", wf: in("custom:\n        sourceStr: web-form\n        scoreNum: \"{{trigger.score}}\"\n        optInBool: \"{{trigger.opt_in}}\"\n        lastSeenAt: \"{{trigger.seen}}\"\n        profileUrl: \"{{trigger.url}}\"\n        notesTxt: \"{{trigger.notes}}\""),
		event: `{"score":"42","opt_in":"yes","seen":"2024-05-01T10:00:00+02:00","url":"https://x.com/jane","notes":12.5}`},
	{name: "input_custom_from_one_expression", wf: in(`custom: "{{trigger.attributes}}"`), event: `{"attributes":{"planStr":"pro","seatsNum":3,"emptyStr":""}}`},

	// Templates.
	{name: "template_literal", wf: in(`name: Walk-in lead`), event: `{}`},
	{name: "template_text_around_expressions", wf: in(`name: "{{trigger.first}} {{trigger.last}} (via {{workflow.name}})"`), event: `{"first":"Jane","last":"Doe"}`},
	{name: "template_missing_path_is_blank", wf: in(`name: "{{trigger.contact.person.name}}"`), event: `{"contact":null}`},
	{name: "template_missing_path_in_text", wf: in(`name: "{{trigger.first}} {{trigger.profile.last}}"`), event: `{"first":"Jane"}`},
	{name: "template_default_operator", wf: in(`name: "{{trigger.name ?? 'Unknown lead'}}"`), event: `{}`},
	{name: "template_helpers", wf: in("name: \"{{upper(trim(trigger.first))}} {{lower(trigger.last)}}\"\n      tags: \"{{split(trigger.tag_list, ',')}}\"\n      username: \"{{join(trigger.parts, '.')}}\""),
		event: `{"first":"  jane ","last":"DOE","tag_list":"a,b","parts":["jane","doe"]}`},
	{name: "template_map_filter", wf: in(`emails: "{{map(filter(trigger.contacts, .kind == 'email'), .value)}}"`),
		event: `{"contacts":[{"kind":"email","value":"a@x.com"},{"kind":"phone","value":"+15555550100"},{"kind":"email","value":"b@x.com"}]}`},
	{name: "template_coalesce_skips_blank_strings", wf: in(`name: "{{coalesce(trigger.nick, trigger.name, 'Anonymous')}}"`), event: `{"nick":"","name":"Jane"}`},
	{name: "template_format_date", wf: in(`custom: {signupDayStr: "{{formatDate(trigger.at, '2006-01-02')}}", signupAt: "{{date(trigger.at)}}"}`), event: `{"at":"2024-05-01T23:30:00-02:00"}`},
	{name: "template_nested_objects_and_lists", wf: in(`emails: [{email: "{{trigger.work}}", type: work}, {email: "{{trigger.home}}"}]`), event: `{"work":"Jane@Work.com"}`},
	{name: "template_type_kept_for_numbers", wf: in(`custom: {seatsNum: "{{trigger.seats * 2}}", seatsStr: "{{trigger.seats}} seats"}`), event: `{"seats":3}`},
	{name: "template_loop_item_and_index", wf: "\n    loop: \"{{trigger.leads}}\"" + in(`externalId: "{{trigger.batch}}-{{loop.index}}"`) + "\n      name: \"{{item.name}}\"",
		event: `{"batch":"b7","leads":[{"name":"A"},{"name":"B"}]}`, item: `{"name":"B"}`, index: 1},

	// Normalisation.
	{name: "normalise_trims_text", wf: in(`name: "{{trigger.name}}"`), event: `{"name":"  Jane Doe \n"}`},
	{name: "normalise_number_as_text", wf: in(`externalId: "{{trigger.id}}"`), event: `{"id":1234567890123}`},
	{name: "normalise_email_lowercase_and_dedupe", wf: in(`emails: "{{trigger.emails}}"`), event: `{"emails":["Jane@X.com","jane@x.com ",{"email":"JANE@x.COM","type":"work"}]}`},
	{name: "normalise_email_type_case", wf: in(`emails: "{{trigger.emails}}"`), event: `{"emails":[{"email":"jane@x.com","type":"Work"}]}`},
	{name: "normalise_phone_e164_default_region_us", wf: in(`phones: "{{trigger.phone}}"`), event: `{"phone":"(555) 555-0100"}`},
	{name: "normalise_phone_e164_region_gb", wf: "\n    default_region: GB" + in(`phones: "{{trigger.phone}}"`), event: `{"phone":"020 7946 0958"}`},
	{name: "normalise_phone_dedupe_after_e164", wf: in(`phones: "{{trigger.phones}}"`), event: `{"phones":["+1 555 555 0100","(555) 555-0100"]}`},
	{name: "normalise_phone_number_value", wf: in(`phones: "{{trigger.phone}}"`), event: `{"phone":5555550100}`},
	{name: "normalise_drops_blanks", wf: in("name: \"{{trigger.name}}\"\n      emails: \"{{trigger.emails}}\"\n      phones: \"{{trigger.phones}}\"\n      tags: \"{{trigger.tags}}\"\n      custom: \"{{trigger.custom}}\"\n      externalId: \"{{trigger.id}}\""),
		event: `{"name":"   ","emails":["",null,{"email":""},{"type":"work"}],"phones":[],"tags":[""],"custom":{},"id":null}`},
	{name: "normalise_single_object_becomes_array", wf: in(`emails: "{{trigger.email}}"`), event: `{"email":{"email":"jane@x.com"}}`},
	{name: "normalise_custom_coercion", wf: in(`custom: "{{trigger.custom}}"`), event: `{"custom":{"aNum":"3.5","bBool":"false","cBool":1,"dAt":"2024-01-02T03:04:05Z","eStr":42,"fUrl":" https://x.com "}}`},
	{name: "normalise_dates", wf: in("birthdayAt: \"{{trigger.b}}\"\n      signedUpAt: \"{{trigger.s}}\""), event: `{"b":"1990-04-01T00:00:00","s":"2024-05-01T10:00:00.123456+02:00"}`},

	// Validation errors.
	{name: "error_email_syntax", wf: in(`emails: "{{trigger.emails}}"`), event: `{"emails":["a@x.com","b@x.com","c@x.com","not-an-email"]}`},
	{name: "error_email_type", wf: in(`emails: "{{trigger.emails}}"`), event: `{"emails":[{"email":"a@x.com","type":"personal"}]}`},
	{name: "error_email_unknown_key", wf: in(`emails: "{{trigger.emails}}"`), event: `{"emails":[{"email":"a@x.com","primary":true}]}`},
	{name: "error_email_verified_not_bool", wf: in(`emails: "{{trigger.emails}}"`), event: `{"emails":[{"email":"a@x.com","verified":"maybe"}]}`},
	{name: "error_too_many_emails", wf: in(`emails: "{{trigger.emails}}"`), event: `{"emails":["a0@x.com","a1@x.com","a2@x.com","a3@x.com","a4@x.com","a5@x.com","a6@x.com","a7@x.com","a8@x.com","a9@x.com","a10@x.com"]}`},
	{name: "error_phone_form", wf: in(`phones: "{{trigger.phones}}"`), event: `{"phones":["+15555550100","call me maybe"]}`},
	{name: "error_phone_too_short", wf: in(`phones: "{{trigger.phone}}"`), event: `{"phone":"12"}`},
	{name: "error_phone_type", wf: in(`phones: "{{trigger.phones}}"`), event: `{"phones":[{"phone":"+15555550100","type":"cell"}]}`},
	{name: "error_name_too_long", wf: in(`name: "{{trigger.name}}"`), event: `{"name":"` + strings.Repeat("n", 257) + `"}`},
	{name: "error_name_not_text", wf: in(`name: "{{trigger.name}}"`), event: `{"name":{"first":"Jane"}}`},
	{name: "error_externalId_too_long", wf: in(`externalId: "{{trigger.id}}"`), event: `{"id":"` + strings.Repeat("x", 257) + `"}`},
	{name: "error_locale_too_long", wf: in(`locale: "{{trigger.locale}}"`), event: `{"locale":"en_US_POSIX_extra_long"}`},
	{name: "error_timeZone_too_long", wf: in(`timeZone: "{{trigger.tz}}"`), event: `{"tz":"` + strings.Repeat("z", 65) + `"}`},
	{name: "error_too_many_tags", wf: in(`tags: "{{trigger.tags}}"`), event: `{"tags":["t0","t1","t2","t3","t4","t5","t6","t7","t8","t9","t10","t11","t12","t13","t14","t15","t16","t17","t18","t19","t20"]}`},
	{name: "error_avatarUrl", wf: in(`avatarUrl: "{{trigger.avatar}}"`), event: `{"avatar":"cdn.example.com/jane.png"}`},
	{name: "error_birthdayAt", wf: in(`birthdayAt: "{{trigger.b}}"`), event: `{"b":"01/04/1990"}`},
	{name: "error_socials_not_object", wf: in(`socials: "{{trigger.socials}}"`), event: `{"socials":["janedoe"]}`},
	{name: "error_locations_latitude", wf: in(`locations: "{{trigger.loc}}"`), event: `{"loc":{"cityName":"Boston","latitude":"north"}}`},
	{name: "error_custom_suffix", wf: in(`custom: "{{trigger.custom}}"`), event: `{"custom":{"score":5}}`},
	{name: "error_custom_num", wf: in(`custom: {scoreNum: "{{trigger.score}}"}`), event: `{"score":"high"}`},
	{name: "error_custom_bool", wf: in(`custom: {optInBool: "{{trigger.opt}}"}`), event: `{"opt":"perhaps"}`},
	{name: "error_custom_at", wf: in(`custom: {seenAt: "{{trigger.seen}}"}`), event: `{"seen":"yesterday"}`},
	{name: "error_custom_str_too_long", wf: in(`custom: {notesStr: "{{trigger.notes}}"}`), event: `{"notes":"` + strings.Repeat("a", 1025) + `"}`},
	{name: "error_custom_url", wf: in(`custom: {siteUrl: "{{trigger.site}}"}`), event: `{"site":"not a url"}`},
	{name: "error_custom_too_many_keys", wf: in(`custom: "{{trigger.custom}}"`), event: customKeys(101)},
	{name: "error_required_blank", wf: "\n    required: [emails, custom.sourceStr]" + in("emails: \"{{trigger.email}}\"\n      custom: {sourceStr: \"{{trigger.source}}\"}"), event: `{"email":""}`},
	{name: "error_expression_runtime", wf: in(`name: "{{lower(trigger.name)}}"`), event: `{"name":42}`},
	{name: "error_several_fields", wf: seedInputs, event: `{"name":["x"],"emails":["bad"],"phones":["+1"]}`},
}

// in returns the YAML of an inputs block holding one line (or several, already indented).
func in(line string) string { return "\n    inputs:\n      " + line }

func customKeys(n int) string {
	m := make(map[string]any, n)
	for i := range n {
		m[fmt.Sprintf("k%dStr", i)] = "v"
	}
	data, _ := json.Marshal(map[string]any{"custom": m})
	return string(data)
}

func caseConfig(c mapCase) string { return "workflows:\n  - name: test" + c.wf + "\n" }

func TestMapMatchesGoldenFiles(t *testing.T) {
	t.Parallel()
	for _, c := range mapCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse(c.name+".yaml", []byte(caseConfig(c)))
			require.NoError(t, err)
			w := cfg.Workflows[0]
			var trigger map[string]any
			require.NoError(t, json.Unmarshal([]byte(c.event), &trigger))
			var item any
			if c.item != "" {
				require.NoError(t, json.Unmarshal([]byte(c.item), &item))
			}
			req, err := w.Map(trigger, item, c.index)

			var got bytes.Buffer
			fmt.Fprintf(&got, "-- config --\n%s-- event --\n%s\n", caseConfig(c), c.event)
			if c.item != "" {
				fmt.Fprintf(&got, "-- item %d --\n%s\n", c.index, c.item)
			}
			if err != nil {
				require.Nil(t, req)
				fmt.Fprintf(&got, "-- errors (%s) --\n", KindOf(err))
				for _, line := range strings.Split(err.Error(), "; mapping: ") {
					got.WriteString(strings.TrimPrefix(line, "mapping: ") + "\n")
				}
			} else {
				data, jerr := json.MarshalIndent(req, "", "  ")
				require.NoError(t, jerr)
				fmt.Fprintf(&got, "-- request --\n%s\n", data)
				// A Request survives a JSON round trip unchanged: it is exactly what is sent.
				var back Request
				require.NoError(t, json.Unmarshal(data, &back))
				require.Equal(t, back, req)
			}
			checkGolden(t, filepath.Join("testdata", "map", c.name+".golden"), got.Bytes())
		})
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./mapping -update to create it")
	require.Equal(t, string(want), string(got), "%s differs; run go test ./mapping -update if the change is intended", path)
}
