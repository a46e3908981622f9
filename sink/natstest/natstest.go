// Package natstest starts real embedded NATS JetStream servers for tests.
package natstest

import (
	"net"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sluice-cdc/sluice/sink"
)

// Server is one embedded JetStream server on a loopback port.
type Server struct {
	t      testing.TB
	cfg    sink.ServerConfig
	server *sink.Server
}

// New starts a single-node JetStream server in a temp dir; it stops with
// the test.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, cfg: sink.ServerConfig{
		Name:       "natstest",
		Listen:     "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		StoreDir:   filepath.Join(t.TempDir(), "jetstream"),
		MaxPayload: 1 << 20,
	}}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server (again, after Stop) on the same port and store.
func (s *Server) Start() {
	s.t.Helper()
	srv, err := sink.StartServer(s.cfg)
	if err != nil {
		s.t.Fatalf("start NATS: %v", err)
	}
	s.server = srv
}

// Stop shuts the server down; its store stays for a later Start.
func (s *Server) Stop() {
	if s.server != nil {
		s.server.Shutdown()
		s.server = nil
	}
}

// URL is the client URL.
func (s *Server) URL() string { return "nats://" + s.cfg.Listen }

// Connect opens a TCP client connection that reconnects forever, closed
// with the test.
func (s *Server) Connect() *nats.Conn {
	s.t.Helper()
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50e6))
	if err != nil {
		s.t.Fatalf("connect to NATS: %v", err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
