package natstest

import (
	"net"
	"testing"
)

// Port returns the port s listens on for clients.
func (s *Server) Port() int {
	addr, ok := s.Addr().(*net.TCPAddr)
	if !ok {
		return 0
	}
	return addr.Port
}

// Restart shuts s down, as a crash would look to its clients, and starts a new
// server on the same store and port, so clients that reconnect find the same
// streams. The new server is stopped when the test ends; s must not be used
// after.
func (s *Server) Restart(t testing.TB) *Server {
	t.Helper()
	port := s.Port()
	s.Shutdown()
	s.WaitForShutdown()
	return StartWith(t, s.StoreDir, port)
}
