package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
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
