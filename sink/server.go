package sink

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	// Routes must authenticate: see ClusterConfig.
	Cluster *ClusterConfig
	// Users are the logins of the client port. Without any, a loopback
	// client port (or one whose TLS verifies client certificates) lets
	// clients in without a login as read-only consumers; any other client
	// port refuses to start (see CheckExposure).
	Users []User
	// TLS, when set, serves the client port over TLS.
	TLS *TLSConfig
	// Prefix, Source and Stream are the subject prefix, the source name and
	// the event stream's name: read and backfill logins (and anonymous
	// readers) may read <Prefix>.<Source>.> and the stream Stream, and
	// backfill logins may request on _SLUICE.<Source>.>. Required when a
	// read or backfill login is configured; without them anonymous
	// clients can do nothing at all.
	Prefix string
	Source string
	Stream string
	// LocalAdminFile is where the server writes, at every start, a fresh
	// random admin login for the CLI on the same host (mode 0600, replaced
	// atomically): see ReadLocalAdmin. Empty means <StoreDir>/admin.creds.
	LocalAdminFile string
	// MaxConsumers caps the number of consumers in the events account (all
	// logins together); 0 means DefaultMaxConsumers.
	MaxConsumers int
	// MaxStore bounds, in bytes, the disk the event streams may take
	// (nats.max_store); 0 leaves it to the disk.
	MaxStore int64
	// Encryption, when set, encrypts the JetStream store at rest; every
	// cluster member needs it, each with the same or its own key.
	Encryption *StoreEncryption
}

// ClusterConfig is the server's cluster (route) port and its peers. Routes
// must authenticate: User and Password, TLS, or both.
type ClusterConfig struct {
	Name   string   // the same on every member
	Listen string   // host:port for routes
	Routes []string // nats://host:port of the members (listing itself is fine)
	// User and Password authenticate routes: every member must use the same
	// pair.
	User     string
	Password string
	// TLS, when set, encrypts routes and admits only peers presenting a
	// certificate signed by TLS.CA (every member's certificate must be
	// valid for both server and client authentication, and for the host
	// in the route URLs).
	TLS *RouteTLSConfig
}

// RouteTLSConfig is the certificate of the route port and the CA its peers'
// certificates must be signed by.
type RouteTLSConfig struct {
	Cert, Key, CA string
}

// User is a login for the client port: a user/password or an nkey.
type User struct {
	User     string
	Password string
	Nkey     string // a public user nkey (U...) instead of user/password
	// Permissions is "admin" (everything; the default), "read" (this
	// source's event subjects, live and through its own JetStream
	// consumers on the event stream) or "backfill" (read, plus requests on
	// the control subjects _SLUICE.<source>.>).
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
	PermAdmin    = "admin"
	PermRead     = "read"
	PermBackfill = "backfill"
)

// Server is an embedded nats-server with JetStream.
type Server struct {
	ns *server.Server
	// events and state are the in-process logins of sluice's own
	// connections, one per account; they work in-process only.
	events, state User
	admin         User
	adminFile     string
}

// StartServer starts an embedded NATS server with JetStream and waits until
// it accepts connections. In a cluster, JetStream may still be electing its
// meta leader when this returns: see WaitJetStream.
func StartServer(cfg ServerConfig) (*Server, error) {
	host, port, err := hostPort("nats.listen", cfg.Listen)
	if err != nil {
		return nil, err
	}
	if problems := CheckExposure(cfg); len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	for _, c := range []struct {
		setting, v string
		dots       bool
	}{{"stream.subject_prefix", cfg.Prefix, true}, {"source.name", cfg.Source, false}, {"stream.name", cfg.Stream, false}} {
		if err := checkToken(c.setting, c.v, c.dots); err != nil {
			return nil, err
		}
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else if err := portFree(cfg.Listen); err != nil {
		return nil, fmt.Errorf("nats.listen %s: %w (is another sluice or nats-server running? choose another port)", cfg.Listen, err)
	}

	// Who lives in which account.
	var l layout
	var logins []login
	for i, u := range cfg.Users {
		switch u.Permissions {
		case PermAdmin, "":
			logins = append(logins, login{user: u, account: AccountState})
		case PermRead, PermBackfill:
			if cfg.Source == "" || cfg.Stream == "" || cfg.Prefix == "" {
				return nil, errors.New("nats.users: read and backfill logins need the source name, stream name and subject prefix (sink.ServerConfig.Source, Stream, Prefix)")
			}
			acc := loginAccount(u.Permissions, i, cfg.Name)
			l.readAccounts = append(l.readAccounts, acc)
			if u.Permissions == PermBackfill {
				l.backfillAccounts = append(l.backfillAccounts, acc)
			}
			logins = append(logins, login{user: u, account: acc})
		default:
			return nil, fmt.Errorf("nats.users: permissions %q: use admin, backfill or read", u.Permissions)
		}
		if u.Nkey != "" && !nkeys.IsValidPublicUserKey(u.Nkey) {
			return nil, fmt.Errorf("nats.users: nkey %q is not a public user nkey (it starts with U)", u.Nkey)
		}
		if u.Nkey == "" && (u.User == "" || u.Password == "") {
			return nil, errors.New("nats.users: each login needs user and password, or nkey")
		}
	}
	anonymous := len(cfg.Users) == 0 && (isLoopback(host) || cfg.TLS != nil && cfg.TLS.VerifyClients)
	var anon User
	if anonymous {
		if anon, err = randomUser("sluice-anonymous"); err != nil {
			return nil, err
		}
		acc := anonAccount(cfg.Name)
		l.readAccounts = append(l.readAccounts, acc)
		logins = append(logins, login{user: anon, account: acc})
	}

	opts := &server.Options{}
	if err := opts.ProcessConfigString(accountsConf(cfg, l)); err != nil {
		return nil, fmt.Errorf("embedded NATS server accounts: %w", err)
	}
	opts.ServerName = cfg.Name
	opts.Host, opts.Port = host, port
	opts.JetStream, opts.StoreDir = true, cfg.StoreDir
	opts.MaxPayload = cfg.MaxPayload
	// The process owns signal handling and logging; the server must not
	// exit the process on SIGTERM before sluice has written its checkpoint.
	opts.NoSigs, opts.NoLog = true, true
	if anonymous {
		opts.NoAuthUser = anon.User
	}
	if c := cfg.Cluster; c != nil {
		if err := clusterOptions(opts, c); err != nil {
			return nil, err
		}
	}
	if enc := cfg.Encryption; enc != nil {
		if cfg.StoreDir == "" {
			return nil, errors.New("nats.store_encryption needs nats.store_dir")
		}
		if err := encryptionOptions(opts, enc); err != nil {
			return nil, err
		}
	}
	s := &Server{adminFile: cfg.LocalAdminFile}
	if s.adminFile == "" {
		s.adminFile = LocalAdminPath(cfg.StoreDir)
	}
	if s.events, err = randomUser("sluice-events"); err != nil {
		return nil, err
	}
	if s.state, err = randomUser("sluice-state"); err != nil {
		return nil, err
	}
	if s.admin, err = randomUser("sluice-admin"); err != nil {
		return nil, err
	}
	s.admin.Permissions = PermAdmin
	inProcess := map[string]struct{}{jwt.ConnectionTypeInProcess: {}}
	if err := addLogins(opts, logins, []internalLogin{
		{s.events, AccountEvents, inProcess},
		{s.state, AccountState, inProcess},
		{s.admin, AccountState, map[string]struct{}{jwt.ConnectionTypeStandard: {}}},
	}); err != nil {
		return nil, err
	}
	if t := cfg.TLS; t != nil {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: t.Cert, KeyFile: t.Key, CaFile: t.CA, Verify: t.VerifyClients})
		if err != nil {
			return nil, fmt.Errorf("nats.tls: %w (check cert, key and ca)", err)
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify = tc, true, t.VerifyClients
		opts.TLSTimeout = 2
	}
	plan := keyAsIs
	if cfg.StoreDir != "" {
		if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
			return nil, fmt.Errorf("nats.store_dir: %w", err)
		}
		// Before nats-server opens the store: with a wrong key it would
		// skip the streams it cannot decrypt, and sluice would create them
		// anew over the old ones.
		if plan, err = planStoreKey(cfg.StoreDir, cfg.Encryption); err != nil {
			return nil, err
		}
	}
	if plan == keyWriteBefore {
		if err := writeKeyCheck(cfg.StoreDir, cfg.Encryption.Key); err != nil {
			return nil, err
		}
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
	if plan == keyWriteAfter {
		// Recovery has re-encrypted the store with the new key by now (in a
		// cluster, the Raft groups follow as they start): from here on the
		// previous key may go.
		if err := writeKeyCheck(cfg.StoreDir, cfg.Encryption.Key); err != nil {
			s.Shutdown()
			return nil, err
		}
	}
	if err := writeLocalAdmin(s.adminFile, localAdmin{URL: ns.ClientURL(), User: s.admin.User, Password: s.admin.Password}); err != nil {
		s.Shutdown()
		return nil, fmt.Errorf("write the local admin login: %w", err)
	}
	return s, nil
}

// CheckExposure names what would let a client or a peer in without a
// login: a client port off loopback with no logins and no verified client
// certificates, or routes without authentication. StartServer refuses to
// start with any of them; sluice check reports them.
func CheckExposure(cfg ServerConfig) []string {
	var problems []string
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil && !isLoopback(host) &&
		len(cfg.Users) == 0 && (cfg.TLS == nil || !cfg.TLS.VerifyClients) {
		problems = append(problems, fmt.Sprintf("nats.listen %s is not a loopback address and no login protects it: "+
			"set nats.users, or nats.tls.verify_clients with nats.tls.ca, or listen on 127.0.0.1", cfg.Listen))
	}
	if c := cfg.Cluster; c != nil {
		switch {
		case (c.User == "") != (c.Password == ""):
			problems = append(problems, "nats.cluster.user and nats.cluster.password go together: set both (the same on every member)")
		case c.User == "" && c.TLS == nil:
			problems = append(problems, "nats.cluster: routes need authentication: set nats.cluster.user and nats.cluster.password "+
				"(the same on every member), or nats.cluster.tls (cert, key and the ca that signed every member's certificate)")
		}
		if c.TLS != nil && (c.TLS.CA == "" || c.TLS.Cert == "" || c.TLS.Key == "") {
			problems = append(problems, "nats.cluster.tls needs cert, key and ca: routes verify their peers' certificates against ca")
		}
	}
	return problems
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type internalLogin struct {
	user    User
	account string
	types   map[string]struct{}
}

// addLogins adds every login to the options, bound to its account.
func addLogins(opts *server.Options, logins []login, internal []internalLogin) error {
	accounts := map[string]*server.Account{}
	for _, a := range opts.Accounts {
		accounts[a.Name] = a
	}
	add := func(u User, account string, types map[string]struct{}) error {
		acc := accounts[account]
		if acc == nil {
			return fmt.Errorf("sink: account %s is not configured", account)
		}
		if u.Nkey != "" {
			opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: u.Nkey, Account: acc, AllowedConnectionTypes: types})
			return nil
		}
		opts.Users = append(opts.Users, &server.User{Username: u.User, Password: u.Password, Account: acc, AllowedConnectionTypes: types})
		return nil
	}
	for _, l := range logins {
		if err := add(l.user, l.account, nil); err != nil {
			return err
		}
	}
	for _, l := range internal {
		if err := add(l.user, l.account, l.types); err != nil {
			return err
		}
	}
	return nil
}

func randomUser(prefix string) (User, error) {
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return User{}, err
	}
	return User{User: prefix + "-" + hex.EncodeToString(secret[:4]), Password: hex.EncodeToString(secret[4:])}, nil
}

// localAdmin is the local admin file: JSON, {"url", "user", "password"}.
type localAdmin struct {
	URL      string `json:"url"`
	User     string `json:"user"`
	Password string `json:"password"`
}

// writeLocalAdmin replaces path atomically with a file only its owner can
// read.
func writeLocalAdmin(path string, a localAdmin) error {
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'))
}

// writeFileAtomic replaces path with data, readable by its owner only: a
// crash leaves the old file or the new one, never half of one.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// LocalAdminPath is where the local admin login of a store is written by
// default.
func LocalAdminPath(storeDir string) string { return filepath.Join(storeDir, "admin.creds") }

// ReadLocalAdmin reads the admin login the embedded server wrote to path
// (ServerConfig.LocalAdminFile) at its last start. The file is JSON:
// {"url": "nats://127.0.0.1:4222", "user": "...", "password": "..."}; the
// login lives in AccountState and works over TCP on the client port.
func ReadLocalAdmin(path string) (User, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return User{}, fmt.Errorf("local admin login: %w (is sluice run started with this nats.store_dir, and are you its user?)", err)
	}
	var a localAdmin
	if err := json.Unmarshal(data, &a); err != nil || a.User == "" || a.Password == "" {
		return User{}, fmt.Errorf("local admin login %s: not a sluice admin file", path)
	}
	return User{User: a.User, Password: a.Password, Permissions: PermAdmin}, nil
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
	if t := c.TLS; t != nil {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: t.Cert, KeyFile: t.Key, CaFile: t.CA, Verify: true})
		if err != nil {
			return fmt.Errorf("nats.cluster.tls: %w (check cert, key and ca)", err)
		}
		// A route is client and server at once: it verifies the peer it
		// dials against the same CA as the peers that dial it.
		tc.RootCAs = tc.ClientCAs
		opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = tc, 2
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

// ClientURL is the URL consumers connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Name is the server's name (its JetStream peer name).
func (s *Server) Name() string { return s.ns.Name() }

// LocalAdmin is the admin login written to LocalAdminFile at this start.
func (s *Server) LocalAdmin() User { return s.admin }

// LocalAdminFile is where the local admin login was written.
func (s *Server) LocalAdminFile() string { return s.adminFile }

// Connect opens an in-process connection in the events account
// (AccountEvents), which holds the event streams: sluice's publisher uses
// it, with plain jetstream.New.
func (s *Server) Connect(name string) (*nats.Conn, error) {
	return s.connect(name, s.events)
}

// ConnectControl opens an in-process connection in the state account
// (AccountState), which holds the checkpoint bucket and where the control
// subjects _SLUICE.<source>.> are served.
func (s *Server) ConnectControl(name string) (*nats.Conn, error) {
	return s.connect(name, s.state)
}

func (s *Server) connect(name string, u User) (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(s.ns), nats.Name(name), nats.MaxReconnects(-1), nats.UserInfo(u.User, u.Password))
}

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
