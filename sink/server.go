package sink

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ServerConfig configures the embedded NATS server.
type ServerConfig struct {
	Name       string // server_name; must be unique in a cluster
	Listen     string // host:port for clients; port 0 picks a free one
	StoreDir   string // JetStream file store
	MaxPayload int32  // largest message accepted, bytes
	// Cluster, when set, joins the embedded servers of several sluice
	// processes into one NATS cluster, so streams can have replicas.
	Cluster *ClusterConfig
	// Users, when set, are the only logins the client port accepts.
	Users []User
	// TLS, when set, serves the client port over TLS.
	TLS *TLSConfig
	// Prefix is the subject prefix "read" users may subscribe to.
	Prefix string
}

// ClusterConfig is the server's cluster (route) port and its peers.
type ClusterConfig struct {
	Name   string   // the same on every member
	Listen string   // host:port for routes
	Routes []string // nats://host:port of the members (listing itself is fine)
	// User and Password, when set, authenticate routes: every member must
	// use the same pair.
	User     string
	Password string
}

// User is a login for the client port: a user/password or an nkey.
type User struct {
	User     string
	Password string
	Nkey     string // a public user nkey (U...) instead of user/password
	// Permissions is "admin" (everything) or "read" (subscribe to the
	// change subjects and read the stream through JetStream consumers,
	// never publish to it or change it).
	Permissions string
}

// TLSConfig is the client port's certificate.
type TLSConfig struct {
	Cert, Key string
	CA        string // verifies client certificates when VerifyClients
	// VerifyClients requires every client to present a certificate signed
	// by CA.
	VerifyClients bool
}

// Permission presets for User.Permissions.
const (
	PermAdmin = "admin"
	PermRead  = "read"
)

// ReadPermissions is what a read-only consumer may do: subscribe to the
// change subjects and use JetStream consumers (create, fetch, ack), and
// read stream info, but never publish a change or edit or delete a stream.
func ReadPermissions(prefix string) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.INFO",
			"$JS.API.STREAM.INFO.>",
			"$JS.API.STREAM.NAMES",
			"$JS.API.STREAM.LIST",
			"$JS.API.STREAM.MSG.GET.>",
			"$JS.API.DIRECT.GET.>",
			"$JS.API.CONSUMER.CREATE.>",
			"$JS.API.CONSUMER.DURABLE.CREATE.>",
			"$JS.API.CONSUMER.INFO.>",
			"$JS.API.CONSUMER.NAMES.>",
			"$JS.API.CONSUMER.LIST.>",
			"$JS.API.CONSUMER.MSG.NEXT.>",
			"$JS.API.CONSUMER.DELETE.>",
			"$JS.ACK.>",
			"$JS.FC.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{prefix + ".>", "_INBOX.>"}},
	}
}

// Server is an embedded nats-server with JetStream.
type Server struct {
	ns *server.Server
	// internal is the login sluice's own in-process connection uses when
	// the client port requires one; it works for in-process connections only.
	internal *User
}

// StartServer starts an embedded NATS server with JetStream and waits until
// it accepts connections. In a cluster, JetStream may still be electing its
// meta leader when this returns: see WaitJetStream.
func StartServer(cfg ServerConfig) (*Server, error) {
	host, port, err := hostPort("nats.listen", cfg.Listen)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else if err := portFree(cfg.Listen); err != nil {
		return nil, fmt.Errorf("nats.listen %s: %w (is another sluice or nats-server running? choose another port)", cfg.Listen, err)
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
	if c := cfg.Cluster; c != nil {
		if err := clusterOptions(opts, c); err != nil {
			return nil, err
		}
	}
	s := &Server{}
	if len(cfg.Users) > 0 {
		if s.internal, err = userOptions(opts, cfg.Users, cfg.Prefix); err != nil {
			return nil, err
		}
	}
	if t := cfg.TLS; t != nil {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: t.Cert, KeyFile: t.Key, CaFile: t.CA, Verify: t.VerifyClients})
		if err != nil {
			return nil, fmt.Errorf("nats.tls: %w (check cert, key and ca)", err)
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify = tc, true, t.VerifyClients
		opts.TLSTimeout = 2
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
	s.ns = ns
	return s, nil
}

func hostPort(setting, addr string) (string, int, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: %w (want host:port, e.g. 127.0.0.1:4222)", setting, addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: port is not a number", setting, addr)
	}
	return host, port, nil
}

// portFree fails when addr cannot be bound: the server would only log it
// and never become ready.
func portFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

func clusterOptions(opts *server.Options, c *ClusterConfig) error {
	if opts.ServerName == "" {
		return errors.New("nats.server_name is required with nats.cluster: each member needs its own name")
	}
	host, port, err := hostPort("nats.cluster.listen", c.Listen)
	if err != nil {
		return err
	}
	if port != 0 {
		if err := portFree(c.Listen); err != nil {
			return fmt.Errorf("nats.cluster.listen %s: %w (choose another port)", c.Listen, err)
		}
	} else {
		port = server.RANDOM_PORT
	}
	opts.Cluster = server.ClusterOpts{
		Name: c.Name, Host: host, Port: port,
		Username: c.User, Password: c.Password,
	}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return fmt.Errorf("nats.cluster.routes: %q is not a URL like nats://host:6222", r)
		}
		if c.User != "" && u.User == nil {
			u.User = url.UserPassword(c.User, c.Password)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// userOptions sets the client port's logins and returns the internal one.
func userOptions(opts *server.Options, users []User, prefix string) (*User, error) {
	perms := func(u User) (*server.Permissions, error) {
		switch u.Permissions {
		case PermAdmin, "":
			return nil, nil
		case PermRead:
			return ReadPermissions(prefix), nil
		}
		return nil, fmt.Errorf("nats.users: permissions %q: use admin or read", u.Permissions)
	}
	for _, u := range users {
		p, err := perms(u)
		if err != nil {
			return nil, err
		}
		if u.Nkey != "" {
			if !nkeys.IsValidPublicUserKey(u.Nkey) {
				return nil, fmt.Errorf("nats.users: nkey %q is not a public user nkey (it starts with U)", u.Nkey)
			}
			opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: u.Nkey, Permissions: p})
			continue
		}
		opts.Users = append(opts.Users, &server.User{Username: u.User, Password: u.Password, Permissions: p})
	}
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	internal := &User{User: "sluice-internal-" + hex.EncodeToString(secret[:4]), Password: hex.EncodeToString(secret)}
	opts.Users = append(opts.Users, &server.User{
		Username: internal.User, Password: internal.Password,
		AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeInProcess: {}},
	})
	return internal, nil
}

// ClientURL is the URL consumers connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Name is the server's name (its JetStream peer name).
func (s *Server) Name() string { return s.ns.Name() }

// Connect opens an in-process client connection, which skips the TCP stack.
func (s *Server) Connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(s.ns), nats.Name(name), nats.MaxReconnects(-1)}
	if s.internal != nil {
		opts = append(opts, nats.UserInfo(s.internal.User, s.internal.Password))
	}
	return nats.Connect("", opts...)
}

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
