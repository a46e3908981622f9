// Package pgtest runs a private, real PostgreSQL 15 server for integration
// tests and demos. The server is configured for logical replication
// (wal_level=logical) and trusts every local connection, so tests can connect
// as the superuser "postgres" without a password.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-cdc/sluice/sources/proctest"
)

const (
	defaultBin   = "/usr/lib/postgresql/15/bin"
	readyTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
	portRetries  = 3
)

// Options configure Start. The zero value is a fresh cluster in a temp dir on
// a free port.
type Options struct {
	Dir      string            // data + socket dir parent; empty = a new temp dir, removed by Stop
	Port     int               // 0 = a free loopback port
	Settings map[string]string // extra postgresql.conf settings; override the defaults
	Log      io.Writer         // server log output; nil = keep in a file <dir>/postgres.log
	// Password, when set, is the superuser's password and TCP logins must
	// give one (scram-sha-256), as on a real server; local socket logins
	// stay trusted. Empty = every login is trusted. Applies to new clusters.
	Password string
	// TLSCert and TLSKey (PEM files) turn ssl on with this certificate.
	// They are copied into the server's dir, owned by the account postgres
	// runs as (it refuses a key others can read); the helper's own
	// connections then use sslmode=require.
	TLSCert, TLSKey string
	// TLSOnly, with TLSCert, accepts TCP logins over TLS only (hostssl in
	// pg_hba.conf), as a server that forbids plaintext does.
	TLSOnly bool
	// StandbyOf, when set, makes the server a streaming standby of that
	// running primary: its data dir is the primary's pg_basebackup (-R),
	// and it follows the primary until Promote.
	StandbyOf *Server
}

// Server is a running (or halted) PostgreSQL server owned by this process.
type Server struct {
	bin       string
	dir       string
	ownDir    bool // Start created dir, so Stop removes it
	port      int
	settings  map[string]string
	password  string
	tlsCert   string // empty = no ssl
	tlsKey    string
	hbaFile   string              // empty = initdb's pg_hba.conf
	standbyOf *Server             // the primary whose base backup the data dir is
	cred      *syscall.Credential // nil: run as the current user
	out       *proctest.Output
	logFile   *os.File
	logPath   string // "" when Options.Log takes the log

	mu      sync.Mutex
	proc    *proctest.Process // nil while halted
	stopped bool
}

// Start runs initdb (unless the data dir already holds a cluster) and starts
// postgres. It returns once the server accepts connections.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin := os.Getenv("SLUICE_PG_BIN")
	if bin == "" {
		bin = defaultBin
	}
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		return nil, fmt.Errorf("PostgreSQL 15 server binaries not found in %s: install the Debian package postgresql-15 or set SLUICE_PG_BIN", bin)
	}
	s := &Server{bin: bin, dir: opts.Dir, port: opts.Port, settings: opts.Settings, password: opts.Password, standbyOf: opts.StandbyOf}
	if p := opts.StandbyOf; p != nil {
		s.password = p.password
	}
	if err := s.setup(ctx, opts.Log); err != nil {
		s.cleanup()
		return nil, err
	}
	if opts.TLSCert != "" || opts.TLSKey != "" || opts.TLSOnly {
		if err := s.installTLS(opts.TLSCert, opts.TLSKey, opts.TLSOnly); err != nil {
			s.cleanup()
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		if s.port == 0 || attempt > 0 {
			port, err := proctest.FreePort()
			if err != nil {
				s.cleanup()
				return nil, err
			}
			s.port = port
		}
		err := s.launch(ctx)
		if err == nil {
			return s, nil
		}
		// Another process may grab the free port between our probe and
		// postgres binding it.
		if opts.Port == 0 && attempt < portRetries && strings.Contains(err.Error(), "could not bind") {
			continue
		}
		s.cleanup()
		return nil, err
	}
}

// New is Start for tests: it fails the test on error and stops the server
// when the test ends. Under -short it skips the test (SkipShort).
func New(t testing.TB, opts ...Options) *Server {
	t.Helper()
	SkipShort(t)
	if len(opts) > 1 {
		t.Fatalf("pgtest.New: at most one Options, got %d", len(opts))
	}
	var o Options
	if len(opts) == 1 {
		o = opts[0]
	}
	s, err := Start(context.Background(), o)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("pgtest: stop: %v", err)
		}
	})
	return s
}

// SkipShort skips t under -short, which runs only tests that start no
// server. A test that calls Start itself calls it first.
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real PostgreSQL: not in -short")
	}
}

func (s *Server) Port() int   { return s.port }
func (s *Server) Dir() string { return s.dir }

// BinDir is where the server's binaries are (pg_recvlogical among them).
func (s *Server) BinDir() string { return s.bin }

// DSN returns a URL for database db as the superuser over loopback TCP,
// with the password if the server has one.
func (s *Server) DSN(db string) string {
	u := url.User("postgres")
	if s.password != "" {
		u = url.UserPassword("postgres", s.password)
	}
	mode := "disable"
	if s.tlsCert != "" {
		mode = "require"
	}
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=%s", u.String(), s.port, url.PathEscape(db), mode)
}

// LogFile is the file the server logs to, <dir>/postgres.log; "" when
// Options.Log takes the log instead.
func (s *Server) LogFile() string { return s.logPath }

// Password is the superuser's password; empty when logins are trusted.
func (s *Server) Password() string { return s.password }

// CreateDatabase creates database name; an existing database is not an error.
func (s *Server) CreateDatabase(ctx context.Context, name string) error {
	err := s.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	// 23505 is what a concurrent CREATE DATABASE of the same name can hit
	// instead of 42P04 (duplicate_database).
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil
	}
	return err
}

// Exec runs sql in database db on a fresh connection. Without args it uses the
// simple protocol, so sql may hold several statements.
func (s *Server) Exec(ctx context.Context, db string, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.DSN(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// Query runs one statement like Exec and returns all rows in their text
// form, NULL as nil: for tests comparing table state.
func (s *Server) Query(ctx context.Context, db, sql string, args ...any) ([][]*string, error) {
	conn, err := pgx.Connect(ctx, s.DSN(db))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql, append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]*string
	for rows.Next() {
		raw := rows.RawValues()
		row := make([]*string, len(raw))
		for i, v := range raw {
			if v != nil {
				text := string(v)
				row[i] = &text
			}
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// Stop shuts the server down and removes the dir if Start created it.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	err := s.halt()
	s.cleanup()
	return err
}

// Halt stops the server but keeps its data, so Restart can bring it back.
func (s *Server) Halt() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.halt()
}

// Restart starts a halted server again on the same port (halting it first if
// it is running) and waits until it accepts connections.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("pgtest: Restart after Stop")
	}
	// Whatever halt reports (a crash, a forced kill), the old process is
	// gone afterwards, which is all a restart needs.
	_ = s.halt()
	return s.launch(ctx)
}

// installTLS copies the certificate and key where postgres accepts
// them, and writes a hostssl-only pg_hba.conf when only TLS may log in.
func (s *Server) installTLS(cert, key string, only bool) error {
	if cert == "" || key == "" {
		return errors.New("pgtest: TLSCert and TLSKey go together, and TLSOnly needs them")
	}
	dir := filepath.Join(s.dir, "tls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	write := func(name string, b []byte) (string, error) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return "", err
		}
		if s.cred != nil {
			if err := os.Chown(path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return "", err
			}
		}
		return path, nil
	}
	for _, f := range []struct{ from, to *string }{{&cert, &s.tlsCert}, {&key, &s.tlsKey}} {
		b, err := os.ReadFile(*f.from)
		if err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		if *f.to, err = write(filepath.Base(*f.from), b); err != nil {
			return err
		}
	}
	if !only {
		return nil
	}
	method := "trust"
	if s.password != "" {
		method = "scram-sha-256"
	}
	var hba strings.Builder
	hba.WriteString("local all all trust\n")
	for _, db := range []string{"all", "replication"} {
		for _, addr := range []string{"127.0.0.1/32", "::1/128"} {
			fmt.Fprintf(&hba, "hostssl %s all %s %s\n", db, addr, method)
		}
	}
	var err error
	s.hbaFile, err = write("pg_hba.conf", []byte(hba.String()))
	return err
}

// setup prepares the dir layout, the log and, if needed, a new cluster.
func (s *Server) setup(ctx context.Context, log io.Writer) error {
	var err error
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		if s.cred, err = proctest.Credential("postgres", "nobody"); err != nil {
			return err
		}
	}
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "pgtest-"); err != nil {
			return err
		}
		s.ownDir = true
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	if s.dir, err = filepath.Abs(s.dir); err != nil {
		return err
	}
	if s.cred != nil {
		if err := proctest.Traversable(s.dir, "postgres"); err != nil {
			return err
		}
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{s.dataDir(), 0o700}, {s.sockDir(), 0o755}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return err
		}
		if s.cred != nil {
			if err := os.Chown(d.path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return err
			}
		}
	}
	if log == nil {
		s.logPath = filepath.Join(s.dir, "postgres.log")
		if s.logFile, err = os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return err
		}
		log = s.logFile
	}
	s.out = proctest.NewOutput(log)
	if _, err := os.Stat(filepath.Join(s.dataDir(), "PG_VERSION")); err == nil {
		return nil // reuse the existing cluster
	}
	if s.standbyOf != nil {
		return s.baseBackup(ctx, s.standbyOf)
	}
	return s.initdb(ctx)
}

// baseBackup copies the running primary into the data dir, set up to
// follow it (standby.signal and primary_conninfo, pg_basebackup -R).
func (s *Server) baseBackup(ctx context.Context, primary *Server) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "pg_basebackup"), "-h", "127.0.0.1", "-p", strconv.Itoa(primary.port),
		"-U", "postgres", "-D", s.dataDir(), "-R", "-X", "stream", "--checkpoint=fast")
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "PGPASSWORD="+primary.password)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	out, err := cmd.CombinedOutput()
	s.out.Write(out)
	if err != nil {
		return fmt.Errorf("pgtest: pg_basebackup of 127.0.0.1:%d: %v\n%s", primary.port, err, proctest.LastLines(out, 20))
	}
	return nil
}

// Promote makes a standby the primary and waits until it accepts writes.
func (s *Server) Promote(ctx context.Context) error {
	return s.Exec(ctx, "postgres", "SELECT pg_promote(true, 60)")
}

func (s *Server) initdb(ctx context.Context) error {
	var out []byte
	var err error
	// Not every machine has the C.UTF-8 locale; --no-locale always works.
	auth := []string{"--auth=trust"}
	if s.password != "" {
		pwfile := filepath.Join(s.dir, "pwfile")
		if err := os.WriteFile(pwfile, []byte(s.password+"\n"), 0o600); err != nil {
			return err
		}
		defer os.Remove(pwfile)
		if s.cred != nil {
			if err := os.Chown(pwfile, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return err
			}
		}
		auth = []string{"--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile=" + pwfile}
	}
	for _, locale := range []string{"--locale=C.UTF-8", "--no-locale"} {
		args := append([]string{"-D", s.dataDir(), "-U", "postgres", "-E", "UTF8", locale, "-N"}, auth...)
		cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "initdb"), args...)
		cmd.Dir = s.dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
		out, err = cmd.CombinedOutput()
		s.out.Write(out)
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("pgtest: initdb: %v\n%s", err, proctest.LastLines(out, 20))
}

// launch starts postgres on s.port and waits until it accepts connections.
func (s *Server) launch(ctx context.Context) error {
	args := []string{"-D", s.dataDir()}
	for _, kv := range s.config() {
		args = append(args, "-c", kv)
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), args...)
	cmd.Dir = s.dir
	s.out.Reset()
	fmt.Fprintf(s.out, "pgtest: starting postgres on 127.0.0.1:%d, data dir %s\n", s.port, s.dataDir())
	p, err := proctest.Start("pgtest: postgres", cmd, s.cred, s.out)
	if err != nil {
		return err
	}
	s.proc = p

	if err := s.waitReady(ctx, p); err != nil {
		p.Kill()
		s.proc = nil
		return err
	}
	return nil
}

func (s *Server) waitReady(ctx context.Context, p *proctest.Process) error {
	return p.WaitReady(ctx, readyTimeout, func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(context.Background())
	})
}

// halt asks postgres for a fast shutdown and kills it if that takes too long.
func (s *Server) halt() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	return p.Stop(syscall.SIGINT, stopTimeout)
}

// cleanup releases what setup acquired; the server must not be running.
func (s *Server) cleanup() {
	if s.logFile != nil {
		s.logFile.Close()
		s.logFile = nil
	}
	if s.ownDir {
		os.RemoveAll(s.dir)
	}
}

// config returns the -c settings: defaults overridden by Options.Settings.
func (s *Server) config() []string {
	conf := map[string]string{
		"listen_addresses":          "127.0.0.1",
		"port":                      strconv.Itoa(s.port),
		"unix_socket_directories":   s.sockDir(),
		"wal_level":                 "logical",
		"max_replication_slots":     "20",
		"max_wal_senders":           "20",
		"fsync":                     "off",
		"synchronous_commit":        "off",
		"full_page_writes":          "off",
		"shared_buffers":            "128MB",
		"max_connections":           "100",
		"logical_decoding_work_mem": "64MB",
		"wal_sender_timeout":        "60s",
	}
	if s.tlsCert != "" {
		conf["ssl"], conf["ssl_cert_file"], conf["ssl_key_file"] = "on", s.tlsCert, s.tlsKey
	}
	if s.hbaFile != "" {
		conf["hba_file"] = s.hbaFile
	}
	for k, v := range s.settings {
		conf[k] = v
	}
	kvs := make([]string, 0, len(conf))
	for k, v := range conf {
		kvs = append(kvs, k+"="+v)
	}
	sort.Strings(kvs)
	return kvs
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) sockDir() string { return filepath.Join(s.dir, "sock") }
