package mapping

import (
	"errors"
	"regexp"

	"strings"
	"unicode"

	"github.com/expr-lang/expr/file"
)

// explain turns a run-time error of expr into words a workflow author knows: which function or
// operator failed and what it wanted, with kinds of values (text, a number, a list) instead of Go's
// type names (string, float64, []interface {}). code is the expression, to name the function the error
// points at.
func explain(err error, code string) string {
	msg := err.Error()
	fn := ""
	var fe *file.Error
	if errors.As(err, &fe) {
		msg = fe.Message
		fn = funcAt(code, fe.From)
	}
	subject := "this expression"
	if fn != "" {
		subject = fn + "()"
	}
	if m := reConversion.FindStringSubmatch(msg); m != nil {
		got, want := goKind(m[1]), goKind(m[2])
		if m[2] == "bool" {
			want = "true or false"
		}
		hint := ""
		if m[1] == "nil" && fn != "" {
			hint = " (a missing value is blank: write " + fn + "(x ?? \"\") to allow it)"
		}
		return subject + " wants " + want + ", got " + got + hint
	}
	if m := reOperation.FindStringSubmatch(msg); m != nil {
		a, op, b := goKind(m[1]), m[2], goKind(m[3])
		hint := ""
		if op == "+" && (m[1] == "string") != (m[3] == "string") {
			hint = " (to join text and a value, write string(value))"
		}
		return "cannot use " + op + " on " + a + " and " + b + hint
	}
	if m := reConvert.FindStringSubmatch(msg); m != nil {
		if fn == "int" {
			return "int() cannot read " + describeGo(m[1]) + " as a whole number"
		}
		return "wants a whole number as an index, got " + describeGo(m[1])
	}
	if m := reFetch.FindStringSubmatch(msg); m != nil {
		return "cannot read ." + m[1] + " of " + goKind(m[2])
	}
	if m := reArgument.FindStringSubmatch(msg); m != nil {
		return m[1] + "() cannot take " + goKind(m[2])
	}
	if m := reReflect.FindStringSubmatch(msg); m != nil {
		return subject + " wants a list, got " + goKind(m[1])
	}
	if m := reIn.FindStringSubmatch(msg); m != nil {
		return `"in" wants a list, an object or text on its right, got ` + goKind(m[1])
	}
	if m := reKeys.FindStringSubmatch(msg); m != nil {
		return subject + " wants an object, got " + goKind(m[1])
	}
	if m := reIndex.FindStringSubmatch(msg); m != nil {
		return "index " + m[1] + " is past the end of a list of " + m[2] + " (get(list, " + m[1] + ") gives a blank instead)"
	}
	return goTypeNames.Replace(msg)
}

var (
	reConversion = regexp.MustCompile(`^interface conversion: interface \{\} is (.+), not (.+)$`)
	reOperation  = regexp.MustCompile(`^invalid operation: (.+) ([-+*/%<>=!]+) (.+)$`)
	reConvert    = regexp.MustCompile(`^invalid operation: int\((.*)\)$`)
	reFetch      = regexp.MustCompile(`^cannot fetch (.+) from (.+)$`)
	reArgument   = regexp.MustCompile(`^invalid argument for (\w+) \(type (.+)\)$`)
	reReflect    = regexp.MustCompile(`^reflect: call of reflect\.Value\.\w+ on (\S+) Value$`)
	reIn         = regexp.MustCompile(`^operator "in" not defined on (.+)$`)
	reKeys       = regexp.MustCompile(`^cannot get \w+ from (.+)$`)
	reIndex      = regexp.MustCompile(`^index out of range: (-?\d+) \(array length is (\d+)\)$`)

	// goTypeNames rewrites the Go type names left in a message nobody rephrased.
	goTypeNames = strings.NewReplacer(
		"map[string]interface {}", "an object", "[]interface {}", "a list", "interface {}", "a value",
		"map[string]any", "an object", "[]any", "a list", "float64", "a number", "int64", "a number",
		"uint64", "a number", "time.Time", "a date", "time.Duration", "a duration", "[]string", "a list",
	)
)

// goKind names a Go type, as printed by the runtime, as the kind of value a template author knows.
func goKind(t string) string {
	switch t {
	case "string":
		return "text"
	case "bool":
		return "a boolean"
	case "nil", "<nil>":
		return "a blank value"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "a number"
	case "time.Time":
		return "a date"
	case "time.Duration":
		return "a duration"
	}
	switch {
	case strings.HasPrefix(t, "map["):
		return "an object"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	}
	return "a value"
}

// describeGo names what int(…) was given: a type name becomes its kind, a value is quoted.
func describeGo(s string) string {
	if k := goKind(s); k != "a value" {
		return k
	}
	if strings.HasPrefix(s, "map[") || strings.HasPrefix(s, "[") {
		return "a value"
	}
	return "the text " + short(s)
}

// funcAt returns the name of the function called at rune offset from in code, or "".
func funcAt(code string, from int) string {
	r := []rune(code)
	if from < 0 || from >= len(r) {
		return ""
	}
	end := from
	for end < len(r) && (unicode.IsLetter(r[end]) || unicode.IsDigit(r[end]) || r[end] == '_') {
		end++
	}
	rest := strings.TrimLeft(string(r[end:]), " ")
	if end == from || !strings.HasPrefix(rest, "(") {
		return ""
	}
	return string(r[from:end])
}
