package main

// Browser tests drive headless Chromium. The page is read by JavaScript
// evaluated afresh in whichever document the tab shows now, polled until it
// answers: chromedp's node queries (WaitVisible, Text, Click...) follow a
// DOM tree of their own, which a replaced document (a navigation, a page
// that refreshes itself) can leave stale, and a query that waits on it
// fails only at the test's deadline, saying nothing. Here a step that never
// sees what it waits for fails after a minute, naming it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// screensEnv names a folder that, when set and existing, also gets every
// screenshot, for a person to look at.
const screensEnv = "KSYNC_TEST_SCREENS"

// browser starts headless Chromium (Debian's chromium; .ci/run installs it)
// and returns a context that drives it.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append([]chromedp.ExecAllocatorOption{},
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Headless,
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	ctx, cancelRun := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelRun)
	require.NoError(t, chromedp.Do(ctx), "start chromium (apt-get install chromium)")
	return ctx
}

// do runs steps in the browser.
func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

// read runs one step that yields a value.
func read[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err)
	return v
}

// screenshots saves the page at desktop and phone width.
func screenshots(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := t.ArtifactDir()
	for _, size := range []struct {
		suffix string
		w, h   int64
	}{{"desktop", 1280, 800}, {"phone", 390, 844}} {
		do(t, ctx, chromedp.EmulateViewport(size.w, size.h))
		png := read(t, ctx, chromedp.FullScreenshot(100))
		file := fmt.Sprintf("%s-%s.png", name, size.suffix)
		require.NoError(t, os.WriteFile(filepath.Join(dir, file), png, 0o644))
		if look := os.Getenv(screensEnv); look != "" {
			if fi, err := os.Stat(look); err == nil && fi.IsDir() {
				require.NoError(t, os.WriteFile(filepath.Join(look, file), png, 0o644))
			}
		}
	}
	do(t, ctx, chromedp.EmulateViewport(1280, 800))
}

// browserPoll is how often a browser step looks at the page again,
// browserEval bounds one look and browserStep one step: a page that never
// shows what a step waits for fails that step, naming it.
const (
	browserPoll = 50 * time.Millisecond
	browserEval = 10 * time.Second
	browserStep = time.Minute
)

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// poll evaluates expr (a JavaScript expression of type T, or null while not
// yet) until it yields a value, and returns it. An evaluation that fails
// (the document is being replaced) is tried again; the step fails when ctx
// ends, with the last error.
func poll[T any](what, expr string) chromedp.Action[T] {
	return func(ctx context.Context, tg *chromedp.Target) (T, error) {
		ctx, cancel := context.WithTimeout(ctx, browserStep)
		defer cancel()
		tick := time.NewTicker(browserPoll)
		defer tick.Stop()
		for {
			ectx, cancel := context.WithTimeout(ctx, browserEval)
			v, err := chromedp.Evaluate[*T](expr)(ectx, tg)
			cancel()
			if err == nil && v != nil {
				return *v, nil
			}
			if err == nil {
				err = errors.New("not yet")
			}
			select {
			case <-ctx.Done():
				var zero T
				return zero, fmt.Errorf("%s: %w (last look: %v)", what, ctx.Err(), err)
			case <-tick.C:
			}
		}
	}
}

// element is the JavaScript for the first element sel matches that is
// rendered, or null.
func element(sel string) string {
	return fmt.Sprintf(`((e) => e && e.getClientRects().length > 0 ? e : null)(document.querySelector(%s))`, jsString(sel))
}

// onElement evaluates fn (JavaScript taking the element) on the first
// rendered element sel matches, once there is one.
func onElement[T any](what, sel, fn string) chromedp.Action[T] {
	return poll[T](what+" "+sel, fmt.Sprintf(`((e) => e ? (%s)(e) : null)(%s)`, fn, element(sel)))
}

// void is a step whose value does not matter.
func void(a chromedp.Action[bool]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, tg)
		return chromedp.Void{}, err
	}
}

// visible waits until sel matches a rendered element.
func visible(sel string) chromedp.Action[chromedp.Void] {
	return void(onElement[bool]("wait for", sel, `() => true`))
}

// gone waits until sel matches nothing.
func gone(sel string) chromedp.Action[chromedp.Void] {
	return void(poll[bool]("wait for no "+sel, fmt.Sprintf(`document.querySelector(%s) ? null : true`, jsString(sel))))
}

// innerText is the rendered text of sel's first element, once it is shown.
func innerText(sel string) chromedp.Action[string] {
	return onElement[string]("read", sel, `(e) => e.innerText`)
}

// outerHTML is sel's first element's HTML, once it is shown.
func outerHTML(sel string) chromedp.Action[string] {
	return onElement[string]("read", sel, `(e) => e.outerHTML`)
}

// attribute is one attribute of sel's first element, once it is shown.
type attribute struct {
	Value  string
	Exists bool
}

func attr(sel, name string) chromedp.Action[attribute] {
	return onElement[attribute]("read", sel, fmt.Sprintf(`(e) => ({Value: e.getAttribute(%[1]s) ?? "", Exists: e.hasAttribute(%[1]s)})`, jsString(name)))
}

// click clicks sel's first element once it is shown, as a person would
// (the element's default action: a link followed, a form submitted).
func click(sel string) chromedp.Action[chromedp.Void] {
	return void(onElement[bool]("click", sel, `(e) => { e.click(); return true }`))
}
