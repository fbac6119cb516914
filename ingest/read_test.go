package ingest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadRecordsAcceptsJSONArraysJSONLinesAndCSV(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, format, input string
		want                []string
	}{
		{"object", "auto", `{"name":"A"}`, []string{`{"name":"A"}`}},
		{"array", "auto", `[{"name":"A"},{"name":"B"}]`, []string{`{"name":"A"}`, `{"name":"B"}`}},
		{"jsonl", "auto", "{\"name\":\"A\"}\n\n{\"name\":\"B\"}\n", []string{`{"name":"A"}`, `{"name":"B"}`}},
		{"csv", "csv", "id,name,address.city,phones\n1,Jane,Paris,\n", []string{`{"address":{"city":"Paris"},"id":"1","name":"Jane"}`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			recs, err := Reader{Format: Format(c.format), IDField: "id"}.ReadAll(strings.NewReader(c.input))
			require.NoError(t, err)
			var got []string
			for _, r := range recs {
				got = append(got, string(r.Data))
			}
			require.Equal(t, c.want, got)
		})
	}
}

func TestReadRecordsNamesTheLineOfABadRecord(t *testing.T) {
	t.Parallel()
	_, err := Reader{IDField: "id"}.ReadAll(strings.NewReader("{\"name\":\"A\"}\n{\"name\":\"B\"}\n[1,2]\n"))
	require.ErrorContains(t, err, "line 3")
	_, err = Reader{IDField: "id"}.ReadAll(strings.NewReader("{\"name\":\"A\"}\n{\"name\": oops}\n"))
	require.ErrorContains(t, err, "line 2")
}

func TestEventIDIsTheIDFieldElseAStableContentHash(t *testing.T) {
	t.Parallel()
	a, err := Reader{IDField: "id"}.ReadAll(strings.NewReader(`{"b":1,"a":2} {"a":2,"b":1} {"id":"x-1"}`))
	require.NoError(t, err)
	require.Equal(t, a[0].ID, a[1].ID, "same content, any key order, same id")
	require.True(t, strings.HasPrefix(a[0].ID, "sha256-"))
	require.Equal(t, "x-1", a[2].ID)
}

func TestReadErrorsNameTheInputAndLine(t *testing.T) {
	t.Parallel()
	_, err := Reader{Name: "leads.csv"}.ReadAll(strings.NewReader("id,name\n1,Jane,extra\n"))
	require.EqualError(t, err, "ingest: leads.csv: line 2: 3 cells, but the header names 2 columns")
	_, err = Reader{Format: "xml"}.ReadAll(strings.NewReader(""))
	require.ErrorIs(t, err, ErrFormat)
}
