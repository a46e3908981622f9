package sink

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ServerConfig configures the embedded NATS server.
type ServerConfig struct {
	Name       string // server_name; must be unique in a cluster
	Listen     string // host:port for clients; port 0 picks a free one
	StoreDir   string // JetStream file store
	MaxPayload int32  // largest message accepted, bytes
}

// Server is an embedded nats-server with JetStream.
type Server struct {
	ns *server.Server
}

// StartServer starts an embedded NATS server with JetStream and waits until
// it accepts connections.
func StartServer(cfg ServerConfig) (*Server, error) {
	host, portText, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats.listen %q: %w (want host:port, e.g. 127.0.0.1:4222)", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("nats.listen %q: port is not a number", cfg.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else if l, err := net.Listen("tcp", cfg.Listen); err != nil {
		// The server would only log this and never become ready.
		return nil, fmt.Errorf("nats.listen %s: %w (is another sluice or nats-server running? choose another port)", cfg.Listen, err)
	} else {
		l.Close()
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		MaxPayload: cfg.MaxPayload,
		// The process owns signal handling and logging; the server must not
		// exit the process on SIGTERM before sluice has written its checkpoint.
		NoSigs: true,
		NoLog:  true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS server did not start listening on %s within 30s: is the port in use or nats.store_dir %q not writable?", cfg.Listen, cfg.StoreDir)
	}
	return &Server{ns: ns}, nil
}

// ClientURL is the URL consumers connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Connect opens an in-process client connection, which skips the TCP stack.
func (s *Server) Connect(name string) (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(s.ns), nats.Name(name), nats.MaxReconnects(-1))
}

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
