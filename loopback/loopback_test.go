package loopback_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/loopback"
)

func TestAddrIsLoopbackOnlyWhenItsHostIs(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:9090": true, "127.1.2.3:80": true, "[::1]:9090": true, "localhost:9090": true,
		":9090": false, "0.0.0.0:9090": false, "10.0.0.5:9090": false, "example.com:80": false, "127.0.0.1": false,
	} {
		require.Equal(t, want, loopback.Addr(addr), addr)
	}
}

func TestHostNamesLoopbackWithOrWithoutAPort(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST:8080": true, "localhost.": true, "127.0.0.1": true, "127.0.0.1:8080": true,
		"[::1]": true, "[::1]:8080": true,
		"evil.example": false, "evil.example:8080": false, "localhost.evil.example": false, "10.0.0.5": false, "": false,
	} {
		require.Equal(t, want, loopback.Host(host), host)
	}
}
