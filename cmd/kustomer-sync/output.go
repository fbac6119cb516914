package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// clip shortens s to n runes on one line, with an ellipsis.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age prints a duration the way people read ages: 45s, 12m, 3h, 5d.
func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// fieldList writes a record as aligned "Name  value" lines, leaving out the
// names without a value.
type fieldList struct{ tw *tabwriter.Writer }

func newFieldList(w io.Writer) fieldList {
	return fieldList{tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
}

// row writes name and v, unless v is "".
func (f fieldList) row(name, v string) {
	if v != "" {
		fmt.Fprintf(f.tw, "%s\t%s\n", name, v)
	}
}

// flush writes the aligned lines out.
func (f fieldList) flush() error { return f.tw.Flush() }
