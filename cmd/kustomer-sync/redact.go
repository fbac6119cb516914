package main

import (
	"errors"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// redacted replaces a user information (user, password, token) in a URL.
const redacted = "[redacted]"

// urlScheme is the start of a URL with a scheme ("nats://", "tls://").
var urlScheme = regexp.MustCompile(`^\s*[A-Za-z][A-Za-z0-9+.-]*://`)

// redactURL hides the user information (user, password, token) of every URL
// in a comma-separated list, as NATS_URL holds, before it is printed or
// logged. It works on text, not on parsed URLs, so it also covers URLs that
// do not parse, such as a password with an unescaped "/", "?", "%", ",", "@"
// or space, and elements without a scheme ("user:pw@host:4222").
//
// A comma may be part of a password, so where a user information starts is
// not always known; redactURL then hides more rather than less:
//   - an element with a scheme hides everything between its "://" and its
//     last "@";
//   - an element without a scheme that has an "@" may be the end of a
//     password that began in the elements before it: it hides everything
//     from the "://" of the nearest element before it that has a scheme (the
//     start of the text if none) up to its last "@";
//   - an element without an "@" keeps its host and port, but hides them when
//     they are not a host and a numeric port (a fragment of "user:pa,ss").
//
// Only a password holding "," followed by a scheme and "://" can still be
// taken for the start of another element.
func redactURL(u string) string {
	type span struct{ from, to int } // [from, to) of u, replaced by redacted
	var spans []span
	hide := func(from, to int) {
		// A span reaching back over earlier ones replaces them.
		for len(spans) > 0 && spans[len(spans)-1].to > from {
			from = min(from, spans[len(spans)-1].from)
			spans = spans[:len(spans)-1]
		}
		spans = append(spans, span{from, to})
	}
	lastURL := 0 // where the user information of the nearest element with a scheme starts
	for start := 0; start <= len(u); {
		end := strings.IndexByte(u[start:], ',')
		if end < 0 {
			end = len(u)
		} else {
			end += start
		}
		el := u[start:end]
		authority := start + len(el) - len(strings.TrimLeft(el, " \t"))
		schemed := false
		if m := urlScheme.FindStringIndex(el); m != nil {
			schemed, authority = true, start+m[1]
		}
		switch at := strings.LastIndexByte(el, '@'); {
		case at >= 0 && schemed:
			hide(authority, start+at)
		case at >= 0:
			hide(lastURL, start+at)
		default:
			host := u[authority:end]
			if i := strings.IndexAny(host, "/?#"); i >= 0 {
				host = host[:i]
			}
			if !hostPort(host) {
				hide(authority, authority+len(host))
			}
		}
		if schemed {
			lastURL = authority
		}
		start = end + 1
	}
	var b strings.Builder
	prev := 0
	for _, s := range spans {
		b.WriteString(u[prev:s.from])
		b.WriteString(redacted)
		prev = s.to
	}
	b.WriteString(u[prev:])
	return b.String()
}

// hostName is a host name or an IPv4 address.
var hostName = regexp.MustCompile(`^[A-Za-z0-9_.-]*$`)

// hostPort reports whether s is a host with an optional numeric port and
// nothing else: no user information can hide in it.
func hostPort(s string) bool {
	s = strings.TrimSpace(s)
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	for _, r := range port {
		if r < '0' || r > '9' {
			return false
		}
	}
	return hostName.MatchString(host) || net.ParseIP(host) != nil
}

// redactURLError replaces a URL parse error, whose text quotes the raw URL and
// fragments of it (a password's characters in "invalid port", "invalid URL
// escape"), with a message that carries neither.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Op == "parse" {
		return errors.New("not a valid URL (characters such as / ? % , or a space in a user name or password must be percent-encoded: / is %2F)")
	}
	return err
}
