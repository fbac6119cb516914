package mapping

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	yamlast "github.com/goccy/go-yaml/ast"
	"github.com/nyaruka/phonenumbers"
)

// Defaults of a workflow's settings, used when the config leaves them out.
const (
	ConcurrencyDefault   = 4
	MaxInFlightDefault   = 8
	MaxItemsDefault      = 10000
	MaxAttemptsDefault   = 5
	InitialDelayDefault  = time.Second
	MaxDelayDefault      = time.Minute
	MultiplierDefault    = 2.0
	JitterDefault        = 0.2
	SubjectDefault       = "leads.>"
	DefaultRegionDefault = "US"
	// DeadLetterPrefixDefault + name is the default dead-letter subject.
	DeadLetterPrefixDefault = "dlq."
	// ResultsPrefixDefault + name is the default results subject.
	ResultsPrefixDefault = "kustomer.customers.created."
	// DefaultWorkflowName is the name of the built-in workflow.
	DefaultWorkflowName = "default"
)

// DefaultConfigYAML is the built-in config: one workflow whose inputs are exactly the sample request of
// the "Create Kustomer Customer" action.
const DefaultConfigYAML = `workflows:
  - name: default
    subject: "leads.>"
    inputs:
      name: "{{trigger.name}}"
      emails: "{{trigger.emails}}"
      phones: "{{trigger.phones}}"
`

// Config is a parsed workflow file. It is read-only after Parse and safe for concurrent use.
type Config struct {
	Workflows []*Workflow
	Source    string // file name, or "built-in"
}

// Workflow turns lead events into Kustomer create requests. Build one with Parse, Load or DefaultConfig:
// every template is compiled there, so a typo fails at start-up, not on the first event. Its fields are
// filled with defaults and must be treated as read-only; its methods are safe for concurrent use and do
// no I/O.
type Workflow struct {
	Name              string
	Subject           string // subject filter, e.g. "leads.>" (default SubjectDefault)
	Concurrency       int    // items of one event mapped and sent in parallel (default ConcurrencyDefault)
	MaxInFlight       int    // events of this workflow in parallel (default MaxInFlightDefault)
	MaxItems          int    // Loop items per event above which the event is refused (default MaxItemsDefault)
	Retry             Retry
	DeadLetterSubject string // default "dlq.<name>"
	ResultsSubject    string // default "kustomer.customers.created.<name>"
	DefaultRegion     string // region for phone numbers without a country code (default "US")

	inputs   []input  // in field order
	required []string // input names, or "custom.<key>", sorted
	loop     *tmpl
	idemKey  *tmpl
}

// Retry is a workflow's retry policy for retryable failures: at most MaxAttempts attempts in all, the
// n-th retry after InitialDelay·Multiplier^(n-1), capped at MaxDelay, spread by ±Jitter (a share).
type Retry struct {
	MaxAttempts  int           // default MaxAttemptsDefault
	InitialDelay time.Duration // default InitialDelayDefault
	MaxDelay     time.Duration // default MaxDelayDefault
	Multiplier   float64       // default MultiplierDefault
	Jitter       float64       // 0..1, default JitterDefault
}

// input is one mapped input of the create body.
type input struct {
	name string
	norm normalizer
	t    *tmpl
}

// ConfigError is a problem in a config file, with its place.
type ConfigError struct {
	File         string
	Line, Column int // 0 when unknown
	Msg          string
	Err          error // the YAML library's error, if it found the problem
}

// Error returns "mapping: file:line:column: message".
func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("mapping: %s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	}
	return fmt.Sprintf("mapping: %s: %s", e.File, e.Msg)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// DefaultConfig returns the built-in config (DefaultConfigYAML): one workflow "default" on "leads.>".
func DefaultConfig() *Config {
	c, err := Parse("built-in", []byte(DefaultConfigYAML))
	if err != nil {
		panic(err) // the built-in config is tested; this is a programming error
	}
	return c
}

// Load reads and parses a workflow file. Errors carry the file, line and column.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mapping: read config: %w", err)
	}
	return Parse(path, data)
}

// Workflow returns the workflow with this name.
func (c *Config) Workflow(name string) (*Workflow, bool) {
	for _, w := range c.Workflows {
		if w.Name == name {
			return w, true
		}
	}
	return nil, false
}

type fileConfig struct {
	Workflows []yamlast.Node `yaml:"workflows"`
}

type fileWorkflow struct {
	Name              string       `yaml:"name"`
	Subject           string       `yaml:"subject"`
	Loop              string       `yaml:"loop"`
	Concurrency       int          `yaml:"concurrency"`
	MaxInFlight       int          `yaml:"max_in_flight"`
	MaxItems          int          `yaml:"max_items"`
	DefaultRegion     string       `yaml:"default_region"`
	IdempotencyKey    string       `yaml:"idempotency_key"`
	Required          []string     `yaml:"required"`
	Retry             fileRetry    `yaml:"retry"`
	DeadLetterSubject string       `yaml:"dead_letter_subject"`
	ResultsSubject    string       `yaml:"results_subject"`
	Inputs            yamlast.Node `yaml:"inputs"`
}

type fileRetry struct {
	MaxAttempts  int           `yaml:"max_attempts"`
	InitialDelay time.Duration `yaml:"initial_delay"`
	MaxDelay     time.Duration `yaml:"max_delay"`
	Multiplier   float64       `yaml:"multiplier"`
	Jitter       *float64      `yaml:"jitter"` // a pointer, so that 0 (no jitter) can be asked for
}

// parser carries the file being parsed, for error positions.
type parser struct {
	file string
}

// errAt returns a ConfigError placed at node (or without a place when node is nil).
func (p *parser) errAt(node yamlast.Node, format string, args ...any) *ConfigError {
	e := &ConfigError{File: p.file, Msg: fmt.Sprintf(format, args...)}
	if node != nil {
		if tk := node.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
	}
	return e
}

// yamlErr turns a YAML library error into a placed ConfigError.
func (p *parser) yamlErr(err error) error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &ConfigError{File: p.file, Msg: ye.GetMessage(), Err: err}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
		return e
	}
	return &ConfigError{File: p.file, Msg: err.Error(), Err: err}
}

// Parse parses a workflow file's content; name is used in errors and as Config.Source.
func Parse(name string, data []byte) (*Config, error) {
	p := &parser{file: name}
	var fc fileConfig
	if err := yaml.UnmarshalWithOptions(data, &fc, yaml.Strict()); err != nil {
		return nil, p.yamlErr(err)
	}
	if len(fc.Workflows) == 0 {
		return nil, p.errAt(nil, `no workflows (the file needs a "workflows:" list)`)
	}
	cfg := &Config{Source: name}
	seen := make(map[string]bool, len(fc.Workflows))
	for _, node := range fc.Workflows {
		w, err := p.workflow(node)
		if err != nil {
			return nil, err
		}
		if seen[w.Name] {
			return nil, p.errAt(valueOf(node, "name"), "workflow %q is defined twice", w.Name)
		}
		seen[w.Name] = true
		cfg.Workflows = append(cfg.Workflows, w)
	}
	return cfg, nil
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

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

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

func (p *parser) workflow(node yamlast.Node) (*Workflow, error) {
	var fw fileWorkflow
	if err := yaml.NodeToValue(node, &fw, yaml.Strict()); err != nil {
		return nil, p.yamlErr(err)
	}
	if fw.Name == "" {
		return nil, p.errAt(node, "a workflow needs a name")
	}
	if !nameRE.MatchString(fw.Name) {
		return nil, p.errAt(valueOf(node, "name"), "workflow name %q: use letters, digits, '-' and '_' only (it names a NATS consumer)", fw.Name)
	}
	at := func(key, format string, args ...any) error {
		return p.errAt(valueOf(node, key), "workflow %q: "+format, append([]any{fw.Name}, args...)...)
	}
	w := &Workflow{
		Name:              fw.Name,
		Subject:           cmp.Or(fw.Subject, SubjectDefault),
		Concurrency:       cmp.Or(fw.Concurrency, ConcurrencyDefault),
		MaxInFlight:       cmp.Or(fw.MaxInFlight, MaxInFlightDefault),
		MaxItems:          cmp.Or(fw.MaxItems, MaxItemsDefault),
		DeadLetterSubject: cmp.Or(fw.DeadLetterSubject, DeadLetterPrefixDefault+fw.Name),
		ResultsSubject:    cmp.Or(fw.ResultsSubject, ResultsPrefixDefault+fw.Name),
		DefaultRegion:     strings.ToUpper(cmp.Or(fw.DefaultRegion, DefaultRegionDefault)),
		Retry: Retry{
			MaxAttempts:  cmp.Or(fw.Retry.MaxAttempts, MaxAttemptsDefault),
			InitialDelay: cmp.Or(fw.Retry.InitialDelay, InitialDelayDefault),
			MaxDelay:     cmp.Or(fw.Retry.MaxDelay, MaxDelayDefault),
			Multiplier:   cmp.Or(fw.Retry.Multiplier, MultiplierDefault),
			Jitter:       JitterDefault,
		},
	}
	if fw.Retry.Jitter != nil {
		w.Retry.Jitter = *fw.Retry.Jitter
	}
	switch {
	case !validSubject(w.Subject, true):
		return nil, at("subject", "subject %q is not a NATS subject filter", w.Subject)
	case !validSubject(w.DeadLetterSubject, false):
		return nil, at("dead_letter_subject", "dead_letter_subject %q is not a NATS subject", w.DeadLetterSubject)
	case !validSubject(w.ResultsSubject, false):
		return nil, at("results_subject", "results_subject %q is not a NATS subject", w.ResultsSubject)
	case w.Concurrency < 1:
		return nil, at("concurrency", "concurrency must be at least 1")
	case w.MaxInFlight < 1:
		return nil, at("max_in_flight", "max_in_flight must be at least 1")
	case w.MaxItems < 1:
		return nil, at("max_items", "max_items must be at least 1")
	case !phonenumbers.GetSupportedRegions()[w.DefaultRegion]:
		return nil, at("default_region", "default_region %q is not a region code such as US, GB or DE", w.DefaultRegion)
	}
	retryNode := valueOf(node, "retry")
	r := w.Retry
	var retryErr string
	switch {
	case r.MaxAttempts < 1:
		retryErr = "max_attempts must be at least 1"
	case r.InitialDelay <= 0:
		retryErr = "initial_delay must be positive"
	case r.MaxDelay < r.InitialDelay:
		retryErr = "max_delay must not be below initial_delay"
	case r.Multiplier < 1:
		retryErr = "multiplier must be at least 1"
	case r.Jitter < 0 || r.Jitter > 1:
		retryErr = "jitter must be between 0 and 1"
	}
	if retryErr != "" {
		return nil, p.errAt(retryNode, "workflow %q: retry: %s", w.Name, retryErr)
	}

	roots := make(map[string]bool)
	if fw.Loop != "" {
		t, err := compileString(fw.Loop, roots)
		if err != nil {
			return nil, at("loop", "loop: %v", err)
		}
		if t.kind != tmplExpr {
			return nil, at("loop", "loop must be one {{…}} expression that gives an array, e.g. \"{{trigger.leads}}\"")
		}
		if roots["item"] || roots["loop"] {
			return nil, at("loop", "loop cannot use item or loop.index: they exist only inside the loop")
		}
		w.loop = t
	}
	if fw.IdempotencyKey != "" {
		t, err := compileString(fw.IdempotencyKey, roots)
		if err != nil {
			return nil, at("idempotency_key", "idempotency_key: %v", err)
		}
		w.idemKey = t
	}
	if err := p.inputs(w, node, fw.Inputs, roots); err != nil {
		return nil, err
	}
	if w.loop == nil && (roots["item"] || roots["loop"]) {
		return nil, at("inputs", "a template uses item or loop.index but the workflow has no loop")
	}
	if err := p.requiredList(w, fw.Required, node); err != nil {
		return nil, err
	}
	return w, nil
}

// inputs compiles the inputs mapping. Unknown names are an error that lists the valid ones.
func (p *parser) inputs(w *Workflow, wfNode, node yamlast.Node, roots map[string]bool) error {
	if node == nil {
		return nil // no inputs: every input is optional, the request is empty
	}
	if _, isNull := node.(*yamlast.NullNode); isNull {
		return nil
	}
	mvs := mappingValues(node)
	if mvs == nil {
		return p.errAt(node, "workflow %q: inputs must be a mapping of input names to templates", w.Name)
	}
	seen := make(map[string]bool, len(mvs))
	for _, mv := range mvs {
		name := mv.Key.GetToken().Value
		idx, ok := fieldIndex[name]
		if !ok {
			return p.errAt(mv.Key, "workflow %q: unknown input %q (valid: %s)", w.Name, name, strings.Join(FieldNames(), ", "))
		}
		if seen[name] {
			return p.errAt(mv.Key, "workflow %q: input %q is given twice", w.Name, name)
		}
		seen[name] = true
		t, err := p.template(mv.Value, fmt.Sprintf("workflow %q: inputs.%s", w.Name, name), roots)
		if err != nil {
			return err
		}
		if name == "custom" && t.kind == tmplObject {
			for _, k := range t.keys {
				if customSuffix(k) == "" {
					return p.errAt(valueOf(mv.Value, k), "workflow %q: custom key %q: %s",
						w.Name, k, customKeyRule)
				}
			}
		}
		w.inputs = append(w.inputs, input{name: name, norm: fields[idx].norm, t: t})
	}
	sort.Slice(w.inputs, func(i, j int) bool { return fieldIndex[w.inputs[i].name] < fieldIndex[w.inputs[j].name] })
	return nil
}

// template compiles a YAML value: strings are templates, mappings and sequences are compiled
// recursively, other scalars are literals. Errors are placed at the offending node.
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
		for _, mv := range mappingValues(n) {
			k := mv.Key.GetToken().Value
			if _, dup := byKey[k]; dup {
				return nil, p.errAt(mv.Key, "%s: key %q is given twice", path, k)
			}
			c, err := p.template(mv.Value, path+"."+k, roots)
			if err != nil {
				return nil, err
			}
			byKey[k] = c
			t.keys = append(t.keys, k)
		}
		sort.Strings(t.keys)
		for _, k := range t.keys {
			t.children = append(t.children, byKey[k])
		}
		return t, nil
	case *yamlast.SequenceNode:
		t := &tmpl{kind: tmplList}
		for i, item := range n.Values {
			c, err := p.template(item, fmt.Sprintf("%s[%d]", path, i), roots)
			if err != nil {
				return nil, err
			}
			t.children = append(t.children, c)
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

// requiredList checks the workflow's required inputs: each must be mapped.
func (p *parser) requiredList(w *Workflow, names []string, node yamlast.Node) error {
	if len(names) == 0 {
		return nil
	}
	for _, name := range names {
		top, sub, _ := strings.Cut(name, ".")
		if _, ok := fieldIndex[top]; !ok || sub != "" && top != "custom" {
			return p.errAt(valueOf(node, "required"), "workflow %q: required: unknown input %q (valid: %s, or custom.<key>)",
				w.Name, name, strings.Join(FieldNames(), ", "))
		}
		in, ok := w.input(top)
		if !ok || sub != "" && in.t.kind == tmplObject && !contains(in.t.keys, sub) {
			return p.errAt(valueOf(node, "required"), "workflow %q: required: %q is not mapped in inputs", w.Name, name)
		}
		if !contains(w.required, name) {
			w.required = append(w.required, name)
		}
	}
	sort.Strings(w.required)
	return nil
}

func (w *Workflow) input(name string) (input, bool) {
	for _, in := range w.inputs {
		if in.name == name {
			return in, true
		}
	}
	return input{}, false
}

// Inputs returns the names of the inputs the workflow maps, in request order.
func (w *Workflow) Inputs() []string {
	names := make([]string, len(w.inputs))
	for i, in := range w.inputs {
		names[i] = in.name
	}
	return names
}

// HasLoop reports whether the workflow maps each item of an array (a Loop) rather than the event itself.
func (w *Workflow) HasLoop() bool { return w.loop != nil }

// LoopTemplate returns the loop template as written, or "" without a loop.
func (w *Workflow) LoopTemplate() string {
	if w.loop == nil {
		return ""
	}
	return w.loop.src
}
