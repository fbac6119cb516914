package main

import (
	"context"
	"errors"
	"net/url"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/tracing"
)

// traceIDPlaceholder is what --trace-url-template replaces with a trace id.
const traceIDPlaceholder = "{trace_id}"

// checkTraceURL refuses a --trace-url-template that is not an http(s) URL
// holding {trace_id}; "" (no links) is fine.
func checkTraceURL(tmpl string) error {
	if tmpl == "" {
		return nil
	}
	if !strings.Contains(tmpl, traceIDPlaceholder) {
		return errors.New("want a URL holding " + traceIDPlaceholder + ", e.g. https://jaeger.example/trace/" + traceIDPlaceholder)
	}
	u, err := url.Parse(strings.ReplaceAll(tmpl, traceIDPlaceholder, "0"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want an http(s) URL, e.g. https://jaeger.example/trace/" + traceIDPlaceholder)
	}
	return nil
}

// traceURL links a trace id by the template; nil when there is none.
func traceURL(tmpl string) func(traceID string) string {
	if tmpl == "" {
		return nil
	}
	return func(id string) string { return strings.ReplaceAll(tmpl, traceIDPlaceholder, url.PathEscape(id)) }
}

// tracePublish starts the span of one `publish`, when the OTEL_* variables
// turn traces on: the events carry its trace context to the worker. done
// ends it and flushes the spans.
func (a *app) tracePublish(ctx context.Context, subject string) (_ context.Context, done func(), err error) {
	p, err := tracing.FromEnv(ctx, os.Getenv, version)
	if err != nil {
		return ctx, nil, usageError{err}
	}
	if !p.Enabled() {
		return ctx, func() {}, nil
	}
	ctx, span := p.TracerProvider().Tracer(tracing.Scope).Start(ctx, "kustomer-sync publish",
		trace.WithAttributes(tracing.AttrDestination.String(subject)))
	return ctx, func() {
		span.End()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(sctx); err != nil {
			a.log.Warn().Err(err).Msg("traces")
		}
	}, nil
}
