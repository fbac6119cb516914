package mapping

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/conf"
)

// The limits of template evaluation. Mapping a lead takes microseconds; these bounds only stop a
// template that would otherwise run for minutes or take the worker's memory (a reduce inside a reduce
// over a large array, text that doubles in a loop), so that one event cannot stall or kill the worker.
// An item that exceeds a limit fails with an [outcome.Mapping] *Error naming the input and the limit, and is
// dead-lettered like any other mapping failure.
const (
	// TemplateMaxSteps is the work the templates of one item (or one loop, or one idempotency key) may
	// do: each loop iteration, each +, each helper call is a step, and building text costs one more step
	// per 256 bytes, a list or an object one more per 16 items. That is enough for a loop over 10,000
	// leads with a few operations each; the steps are spent in well under a second.
	TemplateMaxSteps = 250_000
	// TemplateMaxTime bounds the same work in time, for work the steps do not see (a helper over a
	// large array inside a loop). It is checked as steps are taken.
	TemplateMaxTime = time.Second
	// TemplateMaxText is the longest text a template may build, in bytes: far above any field of
	// Kustomer's (names are 256 characters, custom text 1024), far below what would hurt the worker.
	TemplateMaxText = 1 << 20
	// TemplateMemoryBudget is expr's own memory budget for one expression: the items of the lists,
	// ranges and objects it builds.
	TemplateMemoryBudget = 1_000_000
	// TemplateMaxNodes is the size of the largest expression a config may hold (operators, names and
	// values), checked when the config loads.
	TemplateMaxNodes = 1000
	// TemplateMaxLoopDepth is how deep loops (map, filter, reduce, …) may be nested in an expression,
	// checked when the config loads.
	TemplateMaxLoopDepth = 3
)

var memoryMsg = fmt.Sprintf("stopped: it built more than the %d list items, ranges and objects a template may build", TemplateMemoryBudget)

// meter is what is left of one evaluation's steps and time, within the limits. It is used by one goroutine (one Map call).
type meter struct {
	left     int
	taken    int
	deadline time.Time // set at the first step, so templates without loops never read the clock
	err      *LimitError
}

func newMeter() *meter { return &meter{left: TemplateMaxSteps} }

// charge spends the cost of producing v. Once exceeded, every later charge fails with the same error.
func (b *meter) charge(v any) error {
	if b.err != nil {
		return b.err
	}
	cost, items := 1, 0
	switch v := v.(type) {
	case string:
		if len(v) > TemplateMaxText {
			return b.fail("text", fmt.Sprintf("stopped: it built a text of more than %d KiB, the most a template may build", TemplateMaxText>>10))
		}
		cost += len(v) >> 8
	case []any:
		items = len(v)
	case []string:
		items = len(v)
	case map[string]any:
		items = len(v)
	}
	if items > TemplateMemoryBudget {
		return b.fail("memory", memoryMsg)
	}
	cost += items >> 4
	b.left -= cost
	b.taken++
	if b.left < 0 {
		return b.fail("steps", fmt.Sprintf("stopped: it needs more than %d steps, the budget of one item (is there a loop inside a loop over a large list?)", TemplateMaxSteps))
	}
	if b.taken&63 == 1 {
		now := time.Now()
		if b.deadline.IsZero() {
			b.deadline = now.Add(TemplateMaxTime)
		} else if now.After(b.deadline) {
			return b.fail("time", fmt.Sprintf("stopped: it ran for more than %s, the budget of one item", TemplateMaxTime))
		}
	}
	return nil
}

func (b *meter) fail(what, msg string) error {
	b.err = &LimitError{What: what, Msg: msg}
	return b.err
}

// stepFunc is the name of the hook the limit patch calls: $step($env, value) charges value to the
// evaluation's meter and returns it. The name cannot be written in a template by accident.
const stepFunc = "$step"

func step(params ...any) (any, error) {
	v := params[1]
	if e, ok := params[0].(*env); ok && e.meter != nil {
		if err := e.meter.charge(v); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// stepOption registers $step, typed as its second argument, so that wrapping a value in it changes
// nothing the type checker knows (a filter predicate stays a boolean).
func stepOption(c *conf.Config) {
	c.Functions[stepFunc] = &builtin.Function{
		Name: stepFunc,
		Func: step,
		Validate: func(args []reflect.Type) (reflect.Type, error) {
			if len(args) != 2 {
				return nil, errors.New("$step takes two arguments")
			}
			return args[1], nil
		},
	}
}

// limitPatch makes every place where a template can loop or build a value take a step: each loop
// body (the predicate of map, filter, reduce, …), each +, each helper call.
type limitPatch struct{}

func (limitPatch) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.PredicateNode:
		if !isStep(n.Node) {
			n.Node = stepCall(n.Node)
		}
	case *ast.BinaryNode:
		if n.Operator == "+" {
			ast.Patch(node, stepCall(n))
		}
	case *ast.BuiltinNode:
		ast.Patch(node, stepCall(n))
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok && id.Value != stepFunc && ownFunctions[id.Value] {
			ast.Patch(node, stepCall(n))
		}
	}
}

func stepCall(n ast.Node) ast.Node {
	call := &ast.CallNode{
		Callee:    &ast.IdentifierNode{Value: stepFunc},
		Arguments: []ast.Node{&ast.IdentifierNode{Value: "$env"}, n},
	}
	call.SetLocation(n.Location())
	call.Callee.SetLocation(n.Location())
	call.Arguments[0].SetLocation(n.Location())
	return call
}

func isStep(n ast.Node) bool {
	c, ok := n.(*ast.CallNode)
	if !ok {
		return false
	}
	id, ok := c.Callee.(*ast.IdentifierNode)
	return ok && id.Value == stepFunc
}

// ownFunctions are the helpers this package defines (or redefines with a size check), whose results
// the limit patch charges like the library's.
var ownFunctions = map[string]bool{"formatDate": true, "coalesce": true, "repeat": true, "replace": true, "join": true}

// limitOptions are the compile options that bound an expression.
var limitOptions = []expr.Option{
	expr.MaxNodes(TemplateMaxNodes),
	stepOption,
	expr.Patch(limitPatch{}),
	expr.Function("repeat", repeatText, new(func(string, int) string)),
	expr.Function("replace", replaceText, new(func(string, string, string) string), new(func(string, string, string, int) string)),
	expr.Function("join", joinText, new(func([]string, string) string), new(func([]string) string),
		new(func([]any, string) string), new(func([]any) string)),
}

// textTooLong is the error of a helper whose result would exceed TemplateMaxText: it is refused before
// the text is built.
func textTooLong(fn string, n int) error {
	return &LimitError{What: "text", Msg: fmt.Sprintf("stopped: %s() would build %d KiB of text, more than the %d KiB a template may build", fn, n>>10, TemplateMaxText>>10)}
}

// repeatText is repeat(s, n), refused before it builds more than TemplateMaxText.
func repeatText(params ...any) (any, error) {
	s, _ := params[0].(string)
	f, _ := toNumber(params[1])
	n := int(f)
	if n < 0 {
		return nil, fmt.Errorf("repeat() wants a count of 0 or more, got %d", n)
	}
	if n > 0 && len(s) > TemplateMaxText/n {
		return nil, textTooLong("repeat", len(s)*min(n, TemplateMaxText))
	}
	return strings.Repeat(s, n), nil
}

// replaceText is replace(s, old, new), refused before it builds more than TemplateMaxText.
func replaceText(params ...any) (any, error) {
	s, _ := params[0].(string)
	old, _ := params[1].(string)
	repl, _ := params[2].(string)
	limit := -1 // replace(s, old, new, n) replaces the first n
	if len(params) > 3 {
		f, _ := toNumber(params[3])
		limit = int(f)
	}
	if len(repl) > len(old) {
		count := utf8.RuneCountInString(s) + 1
		if old != "" {
			count = strings.Count(s, old)
		}
		if limit >= 0 {
			count = min(count, limit)
		}
		if size := len(s) + count*(len(repl)-len(old)); count > 0 && (size > TemplateMaxText || size < 0 || (len(repl)-len(old)) > TemplateMaxText/count) {
			return nil, textTooLong("replace", TemplateMaxText+1)
		}
	}
	return strings.Replace(s, old, repl, limit), nil
}

// joinText is join(list, glue), refused before it builds more than TemplateMaxText.
func joinText(params ...any) (any, error) {
	list, ok := params[0].([]any)
	if strs, isStrings := params[0].([]string); isStrings {
		list, ok = make([]any, len(strs)), true
		for i, s := range strs {
			list[i] = s
		}
	}
	if !ok {
		return nil, fmt.Errorf("join() wants a list of texts, got %s", describe(params[0]))
	}
	glue := ""
	if len(params) > 1 {
		glue, _ = params[1].(string)
	}
	parts := make([]string, len(list))
	size := 0
	for i, v := range list {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("join() wants a list of texts, got %s at %d", describe(v), i)
		}
		parts[i] = s
		size += len(s)
		if i > 0 {
			size += len(glue)
		}
		if size > TemplateMaxText {
			return nil, textTooLong("join", size)
		}
	}
	return strings.Join(parts, glue), nil
}

// checkAtLoad refuses, when the config loads, an expression that could only exceed its limits: loops
// nested too deep, a constant range longer than a template may build.
func checkAtLoad(tree ast.Node) error {
	if d := loopDepth(tree); d > TemplateMaxLoopDepth {
		return fmt.Errorf("loops (map, filter, reduce, …) are nested %d deep; at most %d are allowed", d, TemplateMaxLoopDepth)
	}
	v := &rangeCheck{}
	ast.Walk(&tree, v)
	return v.err
}

// loopDepth is how deep predicates (loop bodies) are nested in tree.
func loopDepth(tree ast.Node) int {
	v := &depthVisitor{}
	ast.Walk(&tree, v)
	return v.max
}

type depthVisitor struct{ max int }

func (v *depthVisitor) Visit(node *ast.Node) {
	if p, ok := (*node).(*ast.PredicateNode); ok {
		v.max = max(v.max, 1+loopDepth(p.Node))
	}
}

type rangeCheck struct{ err error }

func (v *rangeCheck) Visit(node *ast.Node) {
	n, ok := (*node).(*ast.BinaryNode)
	if !ok || n.Operator != ".." || v.err != nil {
		return
	}
	from, fromOK := n.Left.(*ast.IntegerNode)
	to, toOK := n.Right.(*ast.IntegerNode)
	if fromOK && toOK && to.Value-from.Value >= TemplateMemoryBudget {
		v.err = fmt.Errorf("the range %d..%d has more than the %d items a template may build", from.Value, to.Value, TemplateMemoryBudget)
	}
}
