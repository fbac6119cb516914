package main

import (
	"errors"
	"net/url"
	"strings"
)

// redactURL hides the user information (user, password, token) of every URL
// in a comma-separated list before it is printed or logged. It works on text,
// not on a parsed URL, so it also covers URLs that do not parse, such as a
// password with an unescaped "/", "?", "%", "," or space.
func redactURL(u string) string {
	// Work from the last "@" back: each one ends a user information that
	// starts after the nearest "://" before it, else after the nearest ",",
	// else at the start of the text.
	out := ""
	rest := u
	for {
		at := strings.LastIndex(rest, "@")
		if at < 0 {
			return rest + out
		}
		head := rest[:at]
		start := 0
		if s := strings.LastIndex(head, "://"); s >= 0 {
			start = s + 3
		} else if c := strings.LastIndex(head, ","); c >= 0 {
			start = c + 1
		}
		out = "[redacted]" + rest[at:] + out
		rest = head[:start]
	}
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
