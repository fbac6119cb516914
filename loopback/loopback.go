// Package loopback tells addresses and Host names of this machine's
// loopback (127.0.0.0/8, ::1, localhost) from others: the admin server and
// HTTP ingest run without a token only there, and then answer only
// requests that name it.
package loopback

import (
	"net"
	"strings"
)

// Addr reports whether addr (host:port) only accepts connections from this
// machine. An empty host (":9090") listens on every interface, so it is not.
func Addr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && name(host)
}

// Host reports whether host, a Host header (a name or an IP address, with
// or without a port, an IPv6 one in brackets), names this machine's
// loopback. A page whose own domain resolves to 127.0.0.1 (DNS rebinding)
// sends its domain, so it is not.
func Host(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	return name(strings.TrimSuffix(host, "."))
}

func name(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
