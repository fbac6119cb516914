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
	yamlparser "github.com/goccy/go-yaml/parser"
	"github.com/nyaruka/phonenumbers"

	"github.com/kustomer-sync/kustomer-sync/kustomer/schema"
	"github.com/kustomer-sync/kustomer-sync/subject"
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
	// BatchSizeDefault is a bulk workflow's default batch size, and BatchSizeMax the most Kustomer's
	// bulk endpoint takes in one request.
	BatchSizeDefault = 100
	BatchSizeMax     = 100
	// LingerDefault is how long a bulk workflow holds a batch that is not full before sending it.
	LingerDefault = 500 * time.Millisecond
	// MaxInFlightBulkDefault is a bulk workflow's default max_in_flight: batches of many events need
	// many events in flight (several full batches' worth of single-item events).
	MaxInFlightBulkDefault = 2000
	// BulkJobTimeoutDefault is how long a bulk workflow follows one job before its items without an
	// outcome fail as exhausted: Kustomer runs jobs for seconds to minutes, this is generous.
	BulkJobTimeoutDefault = 30 * time.Minute
)

// Modes of a workflow (the mode option): how its items reach Kustomer.
const (
	// ModePerItem (default) sends one create request per item.
	ModePerItem = "per-item"
	// ModeBulk gathers the items of many events into bulk requests of up to BatchSize customers.
	ModeBulk = "bulk"
)

// Where a workflow's consumer starts when it is first created (the start option). A consumer that
// exists keeps its position whatever start says.
const (
	StartNew  = "new"  // default: events published from the worker's first start with this workflow on
	StartAll  = "all"  // every event the stream still holds
	StartTime = "time" // events published at or after Workflow.StartTime (start: <RFC 3339 time>)
)

// Ledger scopes (the ledger_scope option): whose items share idempotency keys.
const (
	// LedgerScopeShared keys items by the event (and idempotency_key) only: any workflow, or the same
	// one renamed, finds an item created before and does not create it again.
	LedgerScopeShared = "shared"
	// LedgerScopeWorkflow adds the workflow's name to the keys: each workflow creates its own customer
	// for an event. It is the default of a workflow whose subject overlaps another workflow's (fan-out).
	LedgerScopeWorkflow = "workflow"
)

// Match keys (the match option): how an existing customer is looked up, in the order listed.
const (
	MatchExternalID = "externalId" // GET /v1/customers/externalId=…
	MatchEmail      = "email"      // GET /v1/customers/email=… with the item's first email
	MatchPhone      = "phone"      // GET /v1/customers/phone=… with the item's first phone
)

// What to do with a customer a match found (the on_match option).
const (
	OnMatchSkip   = "skip"   // default: leave the customer as it is
	OnMatchUpdate = "update" // PUT the mapped fields with replace=false, emails and phones merged
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
	// Start is where the workflow's consumer starts when it is first created: StartNew (default),
	// StartAll or StartTime (from StartTime).
	Start     string
	StartTime time.Time
	// LedgerScope is LedgerScopeShared or LedgerScopeWorkflow. Default: LedgerScopeWorkflow when the
	// workflow's subject overlaps another workflow's in the same file, LedgerScopeShared otherwise.
	LedgerScope string
	// Mode is ModePerItem (default) or ModeBulk. BatchSize (1..BatchSizeMax, default BatchSizeDefault)
	// and Linger (default LingerDefault) shape a bulk workflow's batches; per-item mode ignores them.
	Mode      string
	BatchSize int
	Linger    time.Duration
	// BulkJobTimeout (default BulkJobTimeoutDefault) bounds how long a bulk workflow follows one job:
	// its items still without an outcome then fail as exhausted. It is also how long Kustomer is taken
	// to be able to run a job whose submission went unanswered.
	BulkJobTimeout time.Duration
	// Match is the ordered list of keys (MatchExternalID, MatchEmail, MatchPhone) by which an existing
	// customer is looked up before creating one; empty: create only. Each key costs at most one
	// look-up (one request) per item.
	Match []string
	// OnMatch is what is done to a customer found by Match: OnMatchSkip (default) or OnMatchUpdate.
	OnMatch string
	// FreshIDs declares that the source never reuses an externalId for a new lead: the externalId
	// look-up is then skipped for an item the ledger has never seen, as it cannot find anything.
	FreshIDs bool

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

// ConfigErrors is every mistake found in one config file, in file order. Parse returns it when there
// is more than one mistake (a lone mistake is a *ConfigError), so a user fixes them all in one go.
type ConfigErrors []*ConfigError

// Error returns "mapping: FILE has N mistakes:" and then each mistake on its own line, indented, as
// "file:line:column: message".
func (es ConfigErrors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mapping: %s has %d mistakes:", es[0].File, len(es))
	for _, e := range es {
		b.WriteString("\n  ")
		b.WriteString(strings.TrimPrefix(e.Error(), "mapping: "))
	}
	return b.String()
}

// Unwrap lets errors.As find each *ConfigError.
func (es ConfigErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

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
	Name              string        `yaml:"name"`
	Subject           string        `yaml:"subject"`
	Loop              string        `yaml:"loop"`
	Concurrency       int           `yaml:"concurrency"`
	MaxInFlight       int           `yaml:"max_in_flight"`
	MaxItems          int           `yaml:"max_items"`
	DefaultRegion     string        `yaml:"default_region"`
	IdempotencyKey    string        `yaml:"idempotency_key"`
	Required          []string      `yaml:"required"`
	Retry             fileRetry     `yaml:"retry"`
	DeadLetterSubject string        `yaml:"dead_letter_subject"`
	ResultsSubject    string        `yaml:"results_subject"`
	Start             string        `yaml:"start"`
	LedgerScope       string        `yaml:"ledger_scope"`
	Mode              string        `yaml:"mode"`
	BatchSize         int           `yaml:"batch_size"`
	Linger            time.Duration `yaml:"linger"`
	BulkJobTimeout    time.Duration `yaml:"bulk_job_timeout"`
	Match             []string      `yaml:"match"`
	OnMatch           string        `yaml:"on_match"`
	FreshIDs          bool          `yaml:"fresh_ids"`
	Inputs            yamlast.Node  `yaml:"inputs"`
}

type fileRetry struct {
	MaxAttempts  int           `yaml:"max_attempts"`
	InitialDelay time.Duration `yaml:"initial_delay"`
	MaxDelay     time.Duration `yaml:"max_delay"`
	Multiplier   float64       `yaml:"multiplier"`
	Jitter       *float64      `yaml:"jitter"` // a pointer, so that 0 (no jitter) can be asked for
}

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

// Parse parses a workflow file's content; name is used in errors and as Config.Source. It reports
// every mistake it finds (ConfigErrors), each with its line and column, not only the first; only a
// YAML syntax error stops it at once.
func Parse(name string, data []byte) (*Config, error) {
	p := &parser{file: name}
	file, err := yamlparser.ParseBytes(data, 0)
	if err != nil {
		p.yamlErr(err)
		return nil, p.result()
	}
	var root yamlast.Node
	if len(file.Docs) > 0 {
		root = file.Docs[0].Body
	}
	if len(file.Docs) > 1 {
		p.errAt(file.Docs[1].Body, "one YAML document per file: put every workflow in the one workflows list")
	}
	var fc fileConfig
	if root != nil {
		p.decodeSettings(root, &fc, "")
	}
	if len(fc.Workflows) == 0 && len(p.errs) == 0 {
		p.errAt(nil, `no workflows (the file needs a "workflows:" list)`)
	}
	cfg := &Config{Source: name}
	seen := make(map[string]bool, len(fc.Workflows))
	for i, node := range fc.Workflows {
		w, err := p.workflow(node, i)
		if err != nil {
			continue
		}
		if seen[w.Name] {
			p.errAt(valueOf(node, "name"), "workflow %q is defined twice", w.Name)
			continue
		}
		seen[w.Name] = true
		cfg.Workflows = append(cfg.Workflows, w)
	}
	if err := p.result(); err != nil {
		return nil, err
	}
	for _, w := range cfg.Workflows {
		if w.LedgerScope == "" {
			w.LedgerScope = LedgerScopeShared
			if len(cfg.Overlapping(w)) > 0 {
				w.LedgerScope = LedgerScopeWorkflow
			}
		}
	}
	return cfg, nil
}

// Overlapping returns the names of the other workflows whose subjects overlap w's: an event on a
// subject both match is processed by each of them (fan-out).
func (c *Config) Overlapping(w *Workflow) []string {
	var names []string
	for _, o := range c.Workflows {
		if o != w && subject.Overlap(o.Subject, w.Subject) {
			names = append(names, o.Name)
		}
	}
	return names
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

// workflow checks and compiles the index-th workflow of the file. Every mistake is recorded on p; the
// error returned only says that there was one (the workflow is then left out).
func (p *parser) workflow(node yamlast.Node, index int) (*Workflow, error) {
	before := len(p.errs)
	failed := func() error {
		if len(p.errs) > before {
			return p.errs[len(p.errs)-1]
		}
		return nil
	}
	name := fmt.Sprintf("workflow %d", index+1) // until the name is known to be right
	if mappingValues(unwrap(node)) != nil {
		if n, ok := unwrap(valueOf(node, "name")).(*yamlast.StringNode); ok && nameRE.MatchString(n.Value) {
			name = fmt.Sprintf("workflow %q", n.Value)
		}
	}
	var fw fileWorkflow
	bad, ok := p.decodeSettings(node, &fw, name+": ")
	if !ok {
		return nil, failed()
	}
	switch {
	case bad["name"]:
	case fw.Name == "":
		p.errAt(node, "%s needs a name", name)
	case !nameRE.MatchString(fw.Name):
		p.errAt(valueOf(node, "name"), "workflow name %q: use letters, digits, '-' and '_' only (it names a NATS consumer)", fw.Name)
	}
	at := func(key, format string, args ...any) error {
		return p.errAt(valueOf(node, key), name+": "+format, args...)
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
	switch fw.Start {
	case "", StartNew:
		w.Start = StartNew
	case StartAll:
		w.Start = StartAll
	default:
		t, err := time.Parse(time.RFC3339, fw.Start)
		if err != nil {
			at("start", "start %q: want new, all, or an RFC 3339 time such as 2026-01-31T00:00:00Z", fw.Start)
		}
		w.Start, w.StartTime = StartTime, t
	}
	w.Mode, w.BatchSize, w.Linger = cmp.Or(fw.Mode, ModePerItem), cmp.Or(fw.BatchSize, BatchSizeDefault), cmp.Or(fw.Linger, LingerDefault)
	switch w.Mode {
	case ModePerItem:
	case ModeBulk:
		if fw.MaxInFlight == 0 {
			w.MaxInFlight = MaxInFlightBulkDefault
		}
	default:
		at("mode", "mode %q: want per-item or bulk", fw.Mode)
	}
	if w.BatchSize < 1 || w.BatchSize > BatchSizeMax {
		at("batch_size", "batch_size %d: want 1 to %d (Kustomer's bulk limit)", w.BatchSize, BatchSizeMax)
	}
	if w.Linger < 0 {
		at("linger", "linger %s must not be negative", w.Linger)
	}
	w.BulkJobTimeout = cmp.Or(fw.BulkJobTimeout, BulkJobTimeoutDefault)
	if w.BulkJobTimeout < 0 {
		at("bulk_job_timeout", "bulk_job_timeout %s must not be negative", w.BulkJobTimeout)
	}
	switch fw.LedgerScope {
	case "", LedgerScopeShared, LedgerScopeWorkflow:
		w.LedgerScope = fw.LedgerScope // "" is resolved once every workflow is known
	default:
		at("ledger_scope", "ledger_scope %q: want shared or workflow", fw.LedgerScope)
	}
	if !validSubject(w.Subject, true) {
		at("subject", "subject %q is not a NATS subject filter", w.Subject)
	}
	// The defaults of these two are valid for any valid name: only a subject given can be wrong.
	if fw.DeadLetterSubject != "" && !validSubject(w.DeadLetterSubject, false) {
		at("dead_letter_subject", "dead_letter_subject %q is not a NATS subject", w.DeadLetterSubject)
	}
	if fw.ResultsSubject != "" && !validSubject(w.ResultsSubject, false) {
		at("results_subject", "results_subject %q is not a NATS subject", w.ResultsSubject)
	}
	if w.Concurrency < 1 {
		at("concurrency", "concurrency must be at least 1")
	}
	if w.MaxInFlight < 1 {
		at("max_in_flight", "max_in_flight must be at least 1")
	}
	if w.MaxItems < 1 {
		at("max_items", "max_items must be at least 1")
	}
	if !phonenumbers.GetSupportedRegions()[w.DefaultRegion] {
		at("default_region", "default_region %q is not a region code such as US, GB or DE", w.DefaultRegion)
	}
	retryNode := valueOf(node, "retry")
	retryAt := func(key, msg string) {
		p.errAt(valueOf(retryNode, key), "%s: retry.%s: %s", name, key, msg)
	}
	r := w.Retry
	if r.MaxAttempts < 1 {
		retryAt("max_attempts", "must be at least 1")
	}
	if r.InitialDelay <= 0 {
		retryAt("initial_delay", "must be positive")
	}
	switch {
	case r.MaxDelay >= r.InitialDelay:
	case fw.Retry.MaxDelay == 0:
		retryAt("initial_delay", fmt.Sprintf("%s is above max_delay (%s by default)", r.InitialDelay, r.MaxDelay))
	default:
		retryAt("max_delay", fmt.Sprintf("%s must not be below initial_delay (%s)", r.MaxDelay, r.InitialDelay))
	}
	if r.Multiplier < 1 {
		retryAt("multiplier", "must be at least 1")
	}
	if r.Jitter < 0 || r.Jitter > 1 {
		retryAt("jitter", "must be between 0 and 1")
	}

	roots := make(map[string]bool)
	if fw.Loop != "" {
		t, err := compileString(fw.Loop, roots)
		switch {
		case err != nil:
			at("loop", "loop: %v", err)
		case t.kind != tmplExpr:
			at("loop", "loop must be one {{…}} expression that gives an array, e.g. \"{{trigger.leads}}\"")
		case roots["item"] || roots["loop"]:
			at("loop", "loop cannot use item or loop.index: they exist only inside the loop")
		default:
			w.loop = t
		}
	}
	if fw.IdempotencyKey != "" {
		t, err := compileString(fw.IdempotencyKey, roots)
		if err != nil {
			at("idempotency_key", "idempotency_key: %v", err)
		}
		w.idemKey = t
	}
	p.inputs(w, name, fw.Inputs, roots)
	if fw.Loop == "" && (roots["item"] || roots["loop"]) {
		at("inputs", "a template uses item or loop.index but the workflow has no loop")
	}
	p.requiredList(w, name, fw.Required, node)
	p.match(w, name, &fw, node)
	if err := failed(); err != nil {
		return nil, err
	}
	return w, nil
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
		if !ok || sub != "" && in.t.kind == tmplObject && !contains(in.t.keys, sub) {
			p.errAt(itemNode(i), "%s: required: %q is not mapped in inputs", wfName, name)
			continue
		}
		if !contains(w.required, name) {
			w.required = append(w.required, name)
		}
	}
	sort.Strings(w.required)
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
