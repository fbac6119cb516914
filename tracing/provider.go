package tracing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// ServiceNameDefault is the service.name of the spans when
// OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) does not
// name one.
const ServiceNameDefault = "kustomer-sync"

// Variables is what [FromEnv] reads itself; the OTLP exporter and the SDK
// read the others (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _CERTIFICATE,
// OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES...) as the OpenTelemetry
// specification says.
var Variables = []string{
	"OTEL_SDK_DISABLED",
	"OTEL_TRACES_EXPORTER",
	"OTEL_EXPORTER_OTLP_ENDPOINT",
	"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL",
	"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
	"OTEL_SERVICE_NAME",
	"OTEL_TRACES_SAMPLER",
	"OTEL_TRACES_SAMPLER_ARG",
}

// Provider is the process's tracer provider, or nothing when tracing is
// off. The zero value and a nil *Provider are off.
type Provider struct {
	sdk *sdktrace.TracerProvider
}

// NewProvider wraps an SDK tracer provider (a test's, with an in-memory
// exporter); nil gives a Provider that is off.
func NewProvider(tp *sdktrace.TracerProvider) *Provider { return &Provider{sdk: tp} }

// Enabled reports whether spans are recorded and exported.
func (p *Provider) Enabled() bool { return p != nil && p.sdk != nil }

// TracerProvider is the provider to hand to the worker, the ingest endpoint
// and the publisher: nil when tracing is off, which they take as "make no
// spans".
func (p *Provider) TracerProvider() trace.TracerProvider {
	if !p.Enabled() {
		return nil
	}
	return p.sdk
}

// Shutdown exports the spans still buffered and stops the exporter; it
// does nothing when tracing is off.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	if err := p.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: flush spans: %w", err)
	}
	return nil
}

// FromEnv builds the tracer provider the OTEL_* variables ask for, read
// through getenv (os.Getenv in production). Tracing is off unless
// OTEL_TRACES_EXPORTER is "otlp", or is unset and
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set;
// OTEL_SDK_DISABLED=true turns it off whatever the others say. The OTLP
// protocol is http/protobuf (the default) or grpc. The sampler is the
// SDK's, from OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default
// parentbased_always_on); version is the service.version.
func FromEnv(ctx context.Context, getenv func(string) string, version string) (*Provider, error) {
	on, err := wanted(getenv)
	if err != nil || !on {
		return &Provider{}, err
	}
	if err := checkSampler(getenv); err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	switch proto := protocol(getenv); proto {
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL is %q: want http/protobuf or grpc", proto)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", ServiceNameDefault)}
	if version != "" {
		attrs = append(attrs, attribute.String("service.version", version))
	}
	// Later options win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// override the default name.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil && res == nil {
		return nil, fmt.Errorf("tracing: OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	return &Provider{sdk: sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))}, nil
}

// wanted says whether the variables ask for traces.
func wanted(getenv func(string) string) (bool, error) {
	if v := strings.TrimSpace(getenv("OTEL_SDK_DISABLED")); v != "" {
		disabled, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("tracing: OTEL_SDK_DISABLED is %q: want true or false", v)
		}
		if disabled {
			return false, nil
		}
	}
	exporters := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))
	if exporters == "" {
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	}
	on := false
	for e := range strings.SplitSeq(exporters, ",") {
		switch strings.TrimSpace(e) {
		case "none":
			return false, nil
		case "otlp":
			on = true
		default:
			return false, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER is %q: want otlp or none", exporters)
		}
	}
	return on, nil
}

func protocol(getenv func(string) string) string {
	if p := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")); p != "" {
		return p
	}
	if p := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL")); p != "" {
		return p
	}
	return "http/protobuf"
}

// checkSampler rejects a sampler the SDK would replace by its default
// with only a log line.
func checkSampler(getenv func(string) string) error {
	name := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER"))
	switch name {
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
		return nil
	case "traceidratio", "parentbased_traceidratio":
		arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG"))
		if arg == "" {
			return nil // the SDK's default ratio, 1
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return fmt.Errorf("tracing: OTEL_TRACES_SAMPLER_ARG is %q: want a ratio from 0 to 1", arg)
		}
		return nil
	}
	return errors.New("tracing: OTEL_TRACES_SAMPLER is " + strconv.Quote(name) +
		": want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio")
}
