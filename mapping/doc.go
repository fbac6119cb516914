// Package mapping turns lead events into Kustomer "create customer" requests, as a workflow file says.
//
// A workflow file (YAML) holds one or more workflows. Each names the NATS subjects it consumes, its
// limits and retry policy, an optional Loop over an array of the event, and its inputs: the fields of
// Kustomer's create body, each a template:
//
//	workflows:
//	  - name: leads
//	    subject: "leads.>"
//	    loop: "{{trigger.leads}}"          # optional: one customer per array item
//	    idempotency_key: "{{item.id}}"     # optional
//	    start: all                         # optional: where a new consumer starts: all (default), new or a time
//	    ledger_scope: shared               # optional: shared, or workflow (each creates its own customer)
//	    mode: bulk                         # optional: per-item (default), or bulk: batches of many events' items
//	    batch_size: 100                    # optional, bulk: customers per bulk request, 1 to 100
//	    linger: 500ms                      # optional, bulk: longest wait for a batch to fill
//	    required: [emails]                 # optional: a blank required input fails the item
//	    inputs:
//	      name: "{{item.first}} {{item.last}}"
//	      emails: "{{item.email}}"
//	      custom:
//	        sourceStr: web-form
//	        scoreNum: "{{item.score}}"
//
// Templates: a value that is exactly one {{…}} keeps the type of the expression's value (an array
// stays an array); text around {{…}} makes a string; anything else is a literal; mappings and lists are
// templated recursively. Expressions are github.com/expr-lang/expr with the roots trigger (the event),
// item and loop.index (inside a Loop) and workflow (name, subject), the library's helpers (lower, upper,
// trim, split, join, map, filter, ??, date, …) and two of ours: formatDate(value, layout) and
// coalesce(a, b, …), the first non-blank argument. A missing path is nil ("blank"), never an error: every
// member access is nil-safe. An index past the end of an array (trigger.emails[3]) is a mapping error;
// get(trigger.emails, 3) is its nil-safe form. An unknown root (a typo such as "triger") fails when the
// file loads.
//
// Each evaluation has limits (TemplateMaxSteps, TemplateMaxTime, TemplateMaxText and expr's memory
// budget): a template that would run for minutes or fill the worker's memory is stopped and fails the
// item with an [outcome.Mapping] error naming the input and the limit (a *LimitError in its chain). What can
// be seen before any event is refused when the file loads: expressions with more than TemplateMaxNodes
// parts, loops nested deeper than TemplateMaxLoopDepth, constant ranges too long to build.
//
// Each item's values are then normalised (text trimmed; a lone email or phone becomes a one-item array
// and text items become objects; emails lower-cased and de-duplicated; phones converted to E.164 with the
// workflow's default region; type defaults home and mobile; blanks dropped; custom values coerced to the
// type their key's suffix names) and validated against Kustomer's limits, so that a request Kustomer would
// reject is never sent. Failures are *Error values (or Errors) naming the field path.
//
// The package is pure: apart from Load reading the file, it does no I/O and carries nothing
// from one item to the next. Workflows are compiled once and are safe for concurrent use.
package mapping
