package mapping

import (
	"cmp"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	yamlast "github.com/goccy/go-yaml/ast"
	yamlparser "github.com/goccy/go-yaml/parser"
	"github.com/nyaruka/phonenumbers"

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
// exists keeps its position whatever start says. Only StartNew and StartTime skip events, and only
// when asked for.
const (
	// StartAll (default): every event the stream holds on the workflow's subject; a renamed
	// workflow (a consumer of a workflow no longer in the config on the same subject) continues
	// where that consumer stopped.
	StartAll  = "all"
	StartNew  = "new"  // events published from the worker's first start with this workflow on
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

// KeyScope is the scope of the workflow's idempotency keys in the ledger
// (ledger.Key): its name under LedgerScopeWorkflow, none ("") when shared.
func (w *Workflow) KeyScope() string {
	if w.LedgerScope == LedgerScopeWorkflow {
		return w.Name
	}
	return ""
}

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
	// Start is where the workflow's consumer starts when it is first created: StartAll (default),
	// StartNew or StartTime (from StartTime).
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

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

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
	case "", StartAll:
		w.Start = StartAll
	case StartNew:
		w.Start = StartNew
	default:
		t, err := time.Parse(time.RFC3339, fw.Start)
		if err != nil {
			at("start", "start %q: want all, new, or an RFC 3339 time such as 2026-01-31T00:00:00Z", fw.Start)
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
