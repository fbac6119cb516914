package mapping

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	yamlast "github.com/goccy/go-yaml/ast"

	"github.com/kustomer-sync/kustomer-sync/kustomer/schema"
)

// parser carries the file being parsed, for error positions, and the mistakes found so far.
type parser struct {
	file string
	errs ConfigErrors
}

// errAt records a mistake placed at node (or without a place when node is nil) and returns it. Every
// mistake is recorded where it is found, once; callers pass the returned error up only to stop work
// that depends on the faulty value.
func (p *parser) errAt(node yamlast.Node, format string, args ...any) *ConfigError {
	e := &ConfigError{File: p.file, Msg: fmt.Sprintf(format, args...)}
	if mvs := mappingValues(node); len(mvs) > 0 {
		node = mvs[0].Key // a mapping's own token is its first ':'; its first key is where it starts
	}
	if node != nil {
		if tk := node.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
	}
	p.errs = append(p.errs, e)
	return e
}

// yamlErr records a YAML library error as a placed mistake and returns it.
func (p *parser) yamlErr(err error) error {
	e := &ConfigError{File: p.file, Msg: err.Error(), Err: err}
	var ye yaml.Error
	if errors.As(err, &ye) {
		e.Msg = ye.GetMessage()
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
	}
	if strings.Contains(e.Msg, "Go struct") || strings.Contains(e.Msg, "unmarshal") {
		// The shape check should have caught it; never show the decoder's Go types.
		e.Msg = "this value has the wrong type for its setting"
	}
	p.errs = append(p.errs, e)
	return e
}

// result returns the mistakes recorded: nil, the only one, or all of them in file order.
func (p *parser) result() error {
	switch len(p.errs) {
	case 0:
		return nil
	case 1:
		return p.errs[0]
	}
	sort.SliceStable(p.errs, func(i, j int) bool {
		a, b := p.errs[i], p.errs[j]
		return a.Line < b.Line || a.Line == b.Line && a.Column < b.Column
	})
	return p.errs
}

// valueOf returns the value node of key in a mapping node, or node itself when there is none, so
// errors point as close as they can.
func valueOf(node yamlast.Node, key string) yamlast.Node {
	for _, mv := range mappingValues(node) {
		if mv.Key.GetToken().Value == key {
			return mv.Value
		}
	}
	return node
}

// keyOf returns the key node of key in a mapping node, or node itself when there is none.
func keyOf(node yamlast.Node, key string) yamlast.Node {
	for _, mv := range mappingValues(node) {
		if mv.Key.GetToken().Value == key {
			return mv.Key
		}
	}
	return node
}

func mappingValues(node yamlast.Node) []*yamlast.MappingValueNode {
	switch n := node.(type) {
	case *yamlast.MappingNode:
		return n.Values
	case *yamlast.MappingValueNode:
		return []*yamlast.MappingValueNode{n}
	case *yamlast.TagNode:
		return mappingValues(n.Value)
	case *yamlast.AnchorNode:
		return mappingValues(n.Value)
	}
	return nil
}

// validSubject checks a NATS subject: dot-separated non-empty tokens without white space; with
// wildcards, a token may be "*" and the last one ">".
func validSubject(s string, wildcards bool) bool {
	if s == "" {
		return false
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "" || strings.ContainsAny(t, " \t\r\n"):
			return false
		case t == "*" || t == ">" && i == len(tokens)-1:
			if !wildcards {
				return false
			}
		case strings.ContainsAny(t, "*>"):
			return false
		}
	}
	return true
}

// inputs compiles the inputs mapping, recording every mistake. Unknown names are a mistake that
// names the closest valid one or lists them all.
func (p *parser) inputs(w *Workflow, wfName string, node yamlast.Node, roots map[string]bool) {
	node = unwrap(node)
	if node == nil {
		return // no inputs: every input is optional, the request is empty
	}
	if _, isNull := node.(*yamlast.NullNode); isNull {
		return
	}
	mvs := mappingValues(node)
	if mvs == nil {
		p.errAt(node, "%s: inputs: want a mapping of input names to templates, got %s", wfName, describeNode(node))
		return
	}
	seen := make(map[string]bool, len(mvs))
	for _, mv := range mvs {
		name := mv.Key.GetToken().Value
		idx, ok := fieldIndex[name]
		if !ok {
			p.errAt(mv.Key, "%s: unknown input %q%s", wfName, name, suggest(name, FieldNames()))
			continue
		}
		if seen[name] {
			p.errAt(mv.Key, "%s: input %q is given twice", wfName, name)
			continue
		}
		seen[name] = true
		t, err := p.template(mv.Value, fmt.Sprintf("%s: inputs.%s", wfName, name), roots)
		if err != nil {
			continue
		}
		if name == "custom" && t.kind == tmplObject {
			for _, k := range t.keys {
				if schema.CustomSuffix(k) == "" {
					err = p.errAt(keyOf(mv.Value, k), "%s: custom key %q: %s", wfName, k, schema.CustomKeyRule)
				}
			}
			if err != nil {
				continue
			}
		}
		w.inputs = append(w.inputs, input{name: name, norm: fields[idx].norm, t: t})
	}
	sort.Slice(w.inputs, func(i, j int) bool { return fieldIndex[w.inputs[i].name] < fieldIndex[w.inputs[j].name] })
}

// template compiles a YAML value: strings are templates, mappings and sequences are compiled
// recursively, other scalars are literals. Each mistake is recorded at the offending node; the error
// returned is the last of them.
func (p *parser) template(node yamlast.Node, path string, roots map[string]bool) (*tmpl, error) {
	switch n := node.(type) {
	case *yamlast.TagNode:
		return p.template(n.Value, path, roots)
	case *yamlast.AnchorNode:
		return p.template(n.Value, path, roots)
	case *yamlast.AliasNode:
		return nil, p.errAt(node, "%s: YAML aliases are not supported in inputs", path)
	case *yamlast.MappingNode, *yamlast.MappingValueNode:
		t := &tmpl{kind: tmplObject}
		byKey := make(map[string]*tmpl)
		var failed error
		for _, mv := range mappingValues(n) {
			k := mv.Key.GetToken().Value
			if _, dup := byKey[k]; dup {
				failed = p.errAt(mv.Key, "%s: key %q is given twice", path, k)
				continue
			}
			c, err := p.template(mv.Value, path+"."+k, roots)
			if err != nil {
				failed = err
				continue
			}
			byKey[k] = c
			t.keys = append(t.keys, k)
		}
		if failed != nil {
			return nil, failed
		}
		sort.Strings(t.keys)
		for _, k := range t.keys {
			t.children = append(t.children, byKey[k])
		}
		return t, nil
	case *yamlast.SequenceNode:
		t := &tmpl{kind: tmplList}
		var failed error
		for i, item := range n.Values {
			c, err := p.template(item, fmt.Sprintf("%s[%d]", path, i), roots)
			if err != nil {
				failed = err
				continue
			}
			t.children = append(t.children, c)
		}
		if failed != nil {
			return nil, failed
		}
		return t, nil
	}
	var v any
	if err := yaml.NodeToValue(node, &v); err != nil {
		return nil, p.yamlErr(err)
	}
	if s, ok := v.(string); ok {
		t, err := compileString(s, roots)
		if err != nil {
			return nil, p.errAt(node, "%s: %v", path, err)
		}
		return t, nil
	}
	t, err := compileValue(v, roots, path)
	if err != nil {
		return nil, p.errAt(node, "%v", err)
	}
	return t, nil
}

// requiredList checks the workflow's required inputs: each must be mapped. Each mistake is placed at
// its own item of the list.
func (p *parser) requiredList(w *Workflow, wfName string, names []string, node yamlast.Node) {
	list := unwrap(valueOf(node, "required"))
	itemNode := func(i int) yamlast.Node {
		if seq, ok := list.(*yamlast.SequenceNode); ok && i < len(seq.Values) {
			return seq.Values[i]
		}
		return list
	}
	for i, name := range names {
		top, sub, _ := strings.Cut(name, ".")
		if _, ok := fieldIndex[top]; !ok || sub != "" && top != "custom" {
			p.errAt(itemNode(i), "%s: required: unknown input %q (valid: %s, or custom.<key>)",
				wfName, name, strings.Join(FieldNames(), ", "))
			continue
		}
		in, ok := w.input(top)
		if !ok || sub != "" && in.t.kind == tmplObject && !slices.Contains(in.t.keys, sub) {
			p.errAt(itemNode(i), "%s: required: %q is not mapped in inputs", wfName, name)
			continue
		}
		if !slices.Contains(w.required, name) {
			w.required = append(w.required, name)
		}
	}
	sort.Strings(w.required)
}
