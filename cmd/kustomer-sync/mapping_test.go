package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/mapping"
)

func TestValidateListsTheWorkflowsOfAGoodConfig(t *testing.T) {
	t.Parallel()
	out, _, err := cli(t, "", "validate", "../../testdata/workflows.yaml")
	require.NoError(t, err)
	require.Contains(t, out, "2 workflows, all templates compile")
	require.Contains(t, out, "batch")
	require.Contains(t, out, "{{trigger.leads}}")
}

func TestValidateNamesFileLineAndColumnOfATypo(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte("workflows:\n  - name: x\n    inputs:\n      name: \"{{triger.name}}\"\n"), 0o600))
	_, _, err := cli(t, "", "validate", path)
	require.Error(t, err)
	require.Contains(t, err.Error(), path+":4:")
}

func TestValidateListsEveryMistakeOfAFileAndFails(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`workflows:
  - name: batch
    retry: {initial_delay: 5}
    concurency: 2
    inputs:
      name: "{{triger.name}}"
`), 0o600))
	_, _, err := cli(t, "", "validate", path)
	require.Error(t, err)
	require.Equal(t, 1, exitCode(err))
	require.Equal(t, "mapping: "+path+" has 3 mistakes:\n"+
		"  "+path+`:3:28: workflow "batch": retry.initial_delay: want a duration such as 5s or 1m, got the number 5`+"\n"+
		"  "+path+`:4:5: workflow "batch": unknown setting "concurency" (did you mean "concurrency"?)`+"\n"+
		"  "+path+`:6:13: workflow "batch": inputs.name: {{triger.name}}: unknown name triger`, err.Error())
}

func TestMapPrintsTheExactRequestBody(t *testing.T) {
	t.Parallel()
	out, _, err := cli(t, `{"name":" Jane ","emails":"JANE@x.com","phones":""}`, "map")
	require.NoError(t, err)
	require.JSONEq(t, `{"name":"Jane","emails":[{"email":"jane@x.com","type":"home"}]}`, out)
}

func TestMapShowsValidationErrorsAndFails(t *testing.T) {
	t.Parallel()
	out, _, err := cli(t, `{"leads":[{"id":"a","email":"bad"},{"id":"b"}]}`, "map", "-c", "../../testdata/workflows.yaml", "-w", "batch")
	require.ErrorIs(t, err, errMappingFailed)
	require.Contains(t, out, `emails[0].email: "bad" is not an email address`)
	require.Contains(t, out, `"externalId": "b"`)
}

func TestMapShowsTheLookUpsOfAWorkflowWithMatchAndTheRequestThen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "match.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`workflows:
  - name: sync
    match: [externalId, email, phone]
    on_match: update
    fresh_ids: true
    inputs:
      externalId: "{{trigger.id}}"
      emails: "{{trigger.emails}}"
      phones: "{{trigger.phones}}"
`), 0o600))
	event := `{"id":"lead-1","emails":"ADA@example.com","phones":"+1 415 555 0101"}`
	out, _, err := cli(t, event, "map", "-c", path)
	require.NoError(t, err)
	require.Contains(t, out, "look-ups, in order, until one finds a customer:\n"+
		"  GET /v1/customers/externalId=lead-1  (only for an item seen before: fresh_ids)\n"+
		"  GET /v1/customers/email=ada@example.com\n"+
		"  GET /v1/customers/phone=%2B14155550101\n"+
		"found: PUT /v1/customers/{id}?replace=false with this body")

	out, _, err = cli(t, event, "map", "--json", "-c", path)
	require.NoError(t, err)
	var res mapResult
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Equal(t, "update", res.OnMatch)
	require.Equal(t, []mapping.Lookup{
		{Key: "externalId", Value: "lead-1", Path: "/v1/customers/externalId=lead-1", OnlyIfSeen: true},
		{Key: "email", Value: "ada@example.com", Path: "/v1/customers/email=ada@example.com"},
		{Key: "phone", Value: "+14155550101", Path: "/v1/customers/phone=%2B14155550101"},
	}, res.Items[0].Lookups)
}

// `map` shows what the worker does with a Loop event: no array is an invalid
// event (exit 1, the reason); an explicit empty array is 0 items.
func TestMapOfALoopEventWithoutItsArrayFailsAndAnEmptyArrayIsZeroItems(t *testing.T) {
	t.Parallel()
	out, _, err := cli(t, `{"source":"x"}`, "map", "-c", "../../testdata/workflows.yaml", "-w", "batch")
	require.Error(t, err)
	require.Equal(t, 1, exitCode(err))
	require.Contains(t, out, "event: mapping: loop: the event has no array there")

	out, _, err = cli(t, `{"source":"x"}`, "map", "--json", "-c", "../../testdata/workflows.yaml", "-w", "batch")
	require.Error(t, err)
	var res struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.False(t, res.OK)
	require.Contains(t, res.Error, "no array there")

	out, _, err = cli(t, `{"source":"x","leads":[]}`, "map", "-c", "../../testdata/workflows.yaml", "-w", "batch")
	require.NoError(t, err)
	require.Equal(t, "0 items: the Loop's array is empty, so nothing is sent\n", out)
}

func TestValidateShowsEachWorkflowsModeAndMatch(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "w.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`workflows:
  - name: plain
    subject: "leads.plain"
    inputs: {name: "{{trigger.name}}"}
  - name: sync
    subject: "leads.sync"
    match: [externalId, email]
    on_match: update
    inputs: {externalId: "{{trigger.id}}", name: "{{trigger.name}}", emails: "{{trigger.emails}}"}
  - name: many
    subject: "leads.many"
    mode: bulk
    batch_size: 50
    inputs: {name: "{{trigger.name}}"}
`), 0o600))
	out, _, err := cli(t, "", "validate", path)
	require.NoError(t, err)
	require.Regexp(t, `NAME\s+SUBJECT\s+MODE\s+MATCH\s+LOOP`, out)
	require.Regexp(t, `plain\s+leads\.plain\s+per-item\s+- \(always create\)`, out)
	require.Regexp(t, `sync\s+leads\.sync\s+per-item\s+externalId,email then update`, out)
	require.Regexp(t, `many\s+leads\.many\s+bulk \(50 per request\)`, out)

	out, _, err = cli(t, "", "validate", "--json", path)
	require.NoError(t, err)
	var rep struct {
		Workflows []struct {
			Mode      string   `json:"mode"`
			BatchSize int      `json:"batch_size"`
			Match     []string `json:"match"`
			OnMatch   string   `json:"on_match"`
		} `json:"workflows"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Equal(t, "per-item", rep.Workflows[0].Mode)
	require.Equal(t, []string{"externalId", "email"}, rep.Workflows[1].Match)
	require.Equal(t, "update", rep.Workflows[1].OnMatch)
	require.Equal(t, "bulk", rep.Workflows[2].Mode)
	require.Equal(t, 50, rep.Workflows[2].BatchSize)
}
