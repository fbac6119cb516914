package mapping

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// env is what every expression sees. It is a struct, not a map, so that a misspelt root ("triger.name")
// fails when the config loads, while any path below trigger and item is resolved at run time and is
// nil when missing.
type env struct {
	Trigger  map[string]any `expr:"trigger"`
	Item     any            `expr:"item"`
	Loop     loopEnv        `expr:"loop"`
	Workflow workflowEnv    `expr:"workflow"`

	meter *meter // what is left of this evaluation's steps and time; nil: unbounded (tests of one template)
}

type loopEnv struct {
	Index int `expr:"index"`
}

type workflowEnv struct {
	Name    string `expr:"name"`
	Subject string `expr:"subject"`
}

// nilSafe rewrites every member access a.b and a[i] into its optional form a?.b and a?.[i], so that a
// missing path yields nil ("blank") instead of "cannot fetch b from <nil>".
type nilSafe struct{}

func (nilSafe) Visit(node *ast.Node) {
	m, ok := (*node).(*ast.MemberNode)
	if !ok || m.Optional || m.Method {
		return
	}
	m.Optional = true
	ast.Patch(node, &ast.ChainNode{Node: m})
}

// rootVisitor records which roots of env an expression uses.
type rootVisitor struct{ roots map[string]bool }

func (v *rootVisitor) Visit(node *ast.Node) {
	if id, ok := (*node).(*ast.IdentifierNode); ok {
		v.roots[id.Value] = true
	}
}

var exprOptions = []expr.Option{
	expr.Env(&env{}),
	expr.Timezone("UTC"),
	expr.Patch(nilSafe{}),
	expr.Function("formatDate", formatDate,
		new(func(any, string) string)),
	expr.Function("coalesce", coalesce,
		new(func(...any) any)),
}

func init() { exprOptions = append(exprOptions, limitOptions...) }

// formatDate(value, layout) formats a date (time.Time, RFC 3339 or date-only string, Unix seconds)
// with a Go layout; a blank value gives "".
func formatDate(params ...any) (any, error) {
	layout, _ := params[1].(string)
	if isBlank(params[0]) {
		return "", nil
	}
	t, ok := toTime(params[0])
	if !ok {
		return nil, fmt.Errorf("formatDate() wants a date (RFC 3339 text or Unix seconds), got %s", describe(params[0]))
	}
	return t.Format(layout), nil
}

// coalesce returns its first argument that is not blank (nil, "", empty array or object), else nil.
func coalesce(params ...any) (any, error) {
	for _, p := range params {
		if !isBlank(p) {
			return p, nil
		}
	}
	return nil, nil
}

var vmPool = sync.Pool{New: func() any { return new(vm.VM) }}

// tmplKind says how a template node produces its value.
type tmplKind uint8

const (
	tmplLiteral tmplKind = iota // a plain value, returned as is
	tmplExpr                    // exactly one {{…}}: the expression's value, type kept
	tmplText                    // text around {{…}}: a string, blanks interpolated as ""
	tmplObject                  // a map whose values are templates
	tmplList                    // a list whose items are templates
)

// tmpl is a compiled template. Compiled once when the config loads, evaluated per item, safe for
// concurrent use.
type tmpl struct {
	kind     tmplKind
	src      string // the template text (leaf kinds)
	value    any
	prog     *vm.Program
	parts    []textPart
	keys     []string // object, sorted
	children []*tmpl  // object values (in keys order) or list items
}

type textPart struct {
	text string
	prog *vm.Program // nil for plain text
}

// compileString compiles a string template, recording the env roots it uses.
func compileString(s string, roots map[string]bool) (*tmpl, error) {
	if !strings.Contains(s, "{{") {
		if strings.Contains(s, "}}") {
			return nil, errors.New(`"}}" without "{{"`)
		}
		return &tmpl{kind: tmplLiteral, src: s, value: s}, nil
	}
	var parts []textPart
	rest := s
	for rest != "" {
		open := strings.Index(rest, "{{")
		if open < 0 {
			if strings.Contains(rest, "}}") {
				return nil, errors.New(`"}}" without "{{"`)
			}
			parts = append(parts, textPart{text: rest})
			break
		}
		if open > 0 {
			if strings.Contains(rest[:open], "}}") {
				return nil, errors.New(`"}}" without "{{"`)
			}
			parts = append(parts, textPart{text: rest[:open]})
		}
		closing := strings.Index(rest[open+2:], "}}")
		if closing < 0 {
			return nil, errors.New(`"{{" without "}}"`)
		}
		code := strings.TrimSpace(rest[open+2 : open+2+closing])
		if code == "" {
			return nil, errors.New("empty {{ }}")
		}
		prog, err := compileExpr(code, roots)
		if err != nil {
			return nil, err
		}
		parts = append(parts, textPart{text: code, prog: prog})
		rest = rest[open+2+closing+2:]
	}
	if onlyOneExpr(parts) {
		for _, p := range parts {
			if p.prog != nil {
				return &tmpl{kind: tmplExpr, src: s, prog: p.prog}, nil
			}
		}
	}
	return &tmpl{kind: tmplText, src: s, parts: parts}, nil
}

// onlyOneExpr reports whether parts are one expression with at most white space around it.
func onlyOneExpr(parts []textPart) bool {
	n := 0
	for _, p := range parts {
		if p.prog != nil {
			n++
		} else if strings.TrimSpace(p.text) != "" {
			return false
		}
	}
	return n == 1
}

func compileExpr(code string, roots map[string]bool) (*vm.Program, error) {
	prog, err := expr.Compile(code, exprOptions...)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			msg := fe.Message
			if strings.Contains(msg, "exceeds maximum allowed nodes") {
				msg = fmt.Sprintf("the expression has more than the %d names, values and operators a template may have", TemplateMaxNodes)
			}
			return nil, fmt.Errorf("{{%s}}: %s", clip(code), msg)
		}
		return nil, fmt.Errorf("{{%s}}: %w", clip(code), err)
	}
	if err := checkAtLoad(prog.Node()); err != nil {
		return nil, fmt.Errorf("{{%s}}: %w", clip(code), err)
	}
	if roots != nil {
		tree := prog.Node()
		ast.Walk(&tree, &rootVisitor{roots: roots})
	}
	return prog, nil
}

// compileValue compiles a config value: strings are templates, maps and lists are compiled recursively,
// anything else is a literal.
func compileValue(v any, roots map[string]bool, path string) (*tmpl, error) {
	switch v := v.(type) {
	case string:
		t, err := compileString(v, roots)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return t, nil
	case map[string]any:
		t := &tmpl{kind: tmplObject, keys: make([]string, 0, len(v))}
		for k := range v {
			t.keys = append(t.keys, k)
		}
		sort.Strings(t.keys)
		for _, k := range t.keys {
			c, err := compileValue(v[k], roots, path+"."+k)
			if err != nil {
				return nil, err
			}
			t.children = append(t.children, c)
		}
		return t, nil
	case []any:
		t := &tmpl{kind: tmplList}
		for i, item := range v {
			c, err := compileValue(item, roots, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			t.children = append(t.children, c)
		}
		return t, nil
	default:
		return &tmpl{kind: tmplLiteral, value: v}, nil
	}
}

// eval evaluates the template. The error names the expression that failed.
func (t *tmpl) eval(e *env) (any, error) {
	switch t.kind {
	case tmplLiteral:
		return t.value, nil
	case tmplExpr:
		v, err := run(t.prog, e)
		if err != nil {
			return nil, &evalError{src: t.src, err: err}
		}
		return v, nil
	case tmplText:
		var b strings.Builder
		for _, p := range t.parts {
			if p.prog == nil {
				b.WriteString(p.text)
				continue
			}
			v, err := run(p.prog, e)
			if err != nil {
				return nil, &evalError{src: t.src, err: err}
			}
			appendText(&b, v)
		}
		return b.String(), nil
	case tmplObject:
		out := make(map[string]any, len(t.keys))
		for i, k := range t.keys {
			v, err := t.children[i].eval(e)
			if err != nil {
				return nil, err
			}
			out[k] = v
		}
		return out, nil
	case tmplList:
		out := make([]any, len(t.children))
		for i, c := range t.children {
			v, err := c.eval(e)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	return nil, nil
}

// source is the template text for error messages ("" for composite literals).
func (t *tmpl) source() string { return t.src }

func run(prog *vm.Program, e *env) (any, error) {
	m := vmPool.Get().(*vm.VM)
	m.MemoryBudget = TemplateMemoryBudget
	v, err := m.Run(prog, e)
	vmPool.Put(m)
	if err == nil {
		return v, nil
	}
	var be *LimitError
	var fe *file.Error
	switch {
	case errors.As(err, &be):
	case errors.As(err, &fe) && fe.Message == "memory budget exceeded":
		be = &LimitError{What: "memory", Msg: memoryMsg}
	default:
		return nil, errors.New(explain(err, prog.Source().String()))
	}
	if e.meter != nil && e.meter.err == nil {
		e.meter.err = be // a helper refused to build too much: the item reached a limit
	}
	return nil, be
}

// clip shortens an expression for a message.
func clip(code string) string {
	if utf8.RuneCountInString(code) > 80 {
		return string([]rune(code)[:80]) + "…"
	}
	return code
}

// appendText writes v as text: nil as nothing, numbers without exponent, dates as RFC 3339, arrays and
// objects as JSON.
func appendText(b *strings.Builder, v any) {
	switch v := v.(type) {
	case nil:
	case string:
		b.WriteString(v)
	case time.Time:
		b.WriteString(v.UTC().Format(time.RFC3339Nano))
	case map[string]any, []any:
		data, err := json.Marshal(v)
		if err == nil {
			b.Write(data)
		}
	default:
		if s, ok := scalarString(v); ok {
			b.WriteString(s)
		} else {
			fmt.Fprint(b, v)
		}
	}
}

// scalarString formats a non-string scalar (number, bool, json.Number) as text.
func scalarString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case float32:
		return strconv.FormatFloat(float64(v), 'f', -1, 32), true
	case int:
		return strconv.Itoa(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case int32:
		return strconv.FormatInt(int64(v), 10), true
	case uint64:
		return strconv.FormatUint(v, 10), true
	case uint:
		return strconv.FormatUint(uint64(v), 10), true
	case json.Number:
		return v.String(), true
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano), true
	}
	return "", false
}

// isBlank reports whether v counts as "not given": nil, a string of white space, an empty array or
// object.
func isBlank(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return strings.TrimSpace(v) == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Map:
		return rv.Len() == 0
	case reflect.Pointer, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// describe names the type of v for messages, without its content.
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case time.Time:
		return "a date"
	}
	if _, ok := scalarString(v); ok {
		return "a number"
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return fmt.Sprintf("a %T", v)
}

func quote(s string) string { return strconv.Quote(s) }
