package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/subject"
)

// overlapNotices says, for each pair of workflows whose subjects overlap,
// that both run an event on a subject both match, and whether each creates
// its own customer for it.
func overlapNotices(cfg *mapping.Config) []string {
	var out []string
	for i, w := range cfg.Workflows {
		for _, o := range cfg.Workflows[i+1:] {
			if !subject.Overlap(w.Subject, o.Subject) {
				continue
			}
			effect := "each creates its own customer for it (ledger_scope: workflow, the default of overlapping workflows)"
			if w.LedgerScope == mapping.LedgerScopeShared && o.LedgerScope == mapping.LedgerScopeShared {
				effect = "they share ledger keys (ledger_scope: shared), so only the first to process an event creates its customer and the other reports it already created"
			}
			out = append(out, fmt.Sprintf("notice: workflows %q (%s) and %q (%s) overlap: an event on a subject both match runs in both (fan-out); %s",
				w.Name, w.Subject, o.Name, o.Subject, effect))
		}
	}
	return out
}

// checkLiveStream checks cfg against the leads stream on the NATS server, as
// `run` would at start.
func (a *app) checkLiveStream(ctx context.Context, stream string, cfg *mapping.Config) (*leads.StreamPlan, error) {
	nc, js, err := a.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	plan, err := leads.CheckStream(ctx, js, leads.StreamConfig{Name: stream}, cfg.Workflows)
	if err != nil {
		return nil, err
	}
	return &plan, nil
}

// planText says what validate found about the live stream.
func planText(plan *leads.StreamPlan) string {
	subjects := strings.Join(plan.Subjects, ", ")
	var text string
	switch {
	case !plan.Exists:
		text = fmt.Sprintf("stream %s: not there yet; 'run' creates it on %s", plan.Name, subjects)
	case plan.Managed:
		text = fmt.Sprintf("stream %s: managed by kustomer-sync; 'run' sets its subjects to %s", plan.Name, subjects)
	default:
		text = fmt.Sprintf("stream %s: created by an operator; it captures %s, which covers every workflow's subject", plan.Name, subjects)
	}
	for _, a := range plan.Abandoned {
		text += "\nnotice: " + a.String() + fmt.Sprintf(" (nats consumer rm %s %s)", plan.Name, a.Consumer)
	}
	return text
}
