// Package mysqltest runs a private, real MariaDB server for integration tests
// of binlog-based change data capture. The server writes a ROW binlog with
// full row images and metadata, GTIDs in strict mode, and lets "root" connect
// over loopback TCP without a password.
package mysqltest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
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

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/sluice-cdc/sluice/sources/proctest"
)

const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
	portRetries  = 3
	// Unix socket paths are limited to 107 bytes; longer dirs get their
	// socket in a separate short temp dir.
	maxSocketPath = 100
)

// Options configure Start. The zero value is a fresh server in a temp dir on
// a free port.
type Options struct {
	Dir      string            // datadir + socket parent; empty = new temp dir, removed by Stop
	Port     int               // 0 = a free loopback port
	Settings map[string]string // extra server options, override the defaults (e.g. {"binlog_format": "STATEMENT"}); "" = a bare --flag
	Log      io.Writer         // server error log; nil = <dir>/mariadb.log
	// TLSCert and TLSKey (PEM files) make the server offer TLS. They are
	// copied into the server's dir, readable by the account it runs as;
	// the helper's own connections then use TLS without verifying it, so
	// they work with require_secure_transport = ON in Settings too.
	TLSCert, TLSKey string
}

// Server is a running (or halted) MariaDB server owned by this process.
type Server struct {
	mariadbd  string
	dir       string
	ownDir    bool   // Start created dir, so Stop removes it
	sockDir   string // normally <dir>/sock
	ownSock   bool   // sockDir is a separate temp dir, removed by Stop
	port      int
	settings  map[string]string
	cred      *syscall.Credential // nil: run as the current user
	userFlags []string            // --user=root when root must run the server itself
	tlsCert   string              // empty = plaintext only
	tlsKey    string
	out       *proctest.Output
	logFile   *os.File
	logPath   string // "" when Options.Log takes the log

	mu      sync.Mutex
	proc    *proctest.Process // nil while halted
	stopped bool
}

// Start bootstraps a data dir with mariadb-install-db (unless Dir already
// holds one) and starts mariadbd. It returns once root can run SELECT 1 over
// TCP.
func Start(ctx context.Context, opts Options) (*Server, error) {
	mariadbd, err1 := findBin("mariadbd")
	installDB, err2 := findBin("mariadb-install-db")
	if err1 != nil || err2 != nil {
		return nil, errors.New("MariaDB server not found: install the Debian package mariadb-server (make test does this)")
	}
	s := &Server{mariadbd: mariadbd, dir: opts.Dir, port: opts.Port, settings: opts.Settings}
	if err := s.setup(ctx, installDB, opts.Log); err != nil {
		s.cleanup()
		return nil, err
	}
	if opts.TLSCert != "" || opts.TLSKey != "" {
		if err := s.installTLS(opts.TLSCert, opts.TLSKey); err != nil {
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
		// mariadbd binding it.
		if opts.Port == 0 && attempt < portRetries && strings.Contains(err.Error(), "Bind on TCP/IP port") {
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
		t.Fatalf("mysqltest.New: at most one Options, got %d", len(opts))
	}
	var o Options
	if len(opts) == 1 {
		o = opts[0]
	}
	s, err := Start(context.Background(), o)
	if err != nil {
		t.Fatalf("mysqltest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("mysqltest: stop: %v", err)
		}
	})
	return s
}

// SkipShort skips t under -short, which runs only tests that start no
// server. A test that calls Start itself calls it first.
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real MariaDB: not in -short")
	}
}

func (s *Server) Port() int    { return s.port }
func (s *Server) Dir() string  { return s.dir }
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// LogFile is the file the server logs to, <dir>/mariadb.log; "" when
// Options.Log takes the log instead.
func (s *Server) LogFile() string { return s.logPath }

// DSN returns "root:@tcp(127.0.0.1:<port>)/<db>" (root with an empty password
// over TCP), the go-sql-driver/mysql format.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("root:@tcp(%s)/%s", s.Addr(), db)
}

// CreateDatabase creates database name; an existing database is not an error.
func (s *Server) CreateDatabase(ctx context.Context, name string) error {
	return s.Exec(ctx, "", "CREATE DATABASE IF NOT EXISTS "+quoteIdent(name))
}

// Exec runs one SQL statement as root in database db ("" = none) on a fresh
// connection. Several statements separated by ';' are not supported. With
// args, sql is a prepared statement with '?' placeholders.
func (s *Server) Exec(ctx context.Context, db, sql string, args ...any) error {
	_, err := s.Query(ctx, db, sql, args...)
	return err
}

// Query runs one statement like Exec and returns all rows as strings, NULL as
// nil — for tests comparing table state.
func (s *Server) Query(ctx context.Context, db, sql string, args ...any) ([][]*string, error) {
	conn, err := client.ConnectWithContext(ctx, s.Addr(), "root", "", db, 10*time.Second, func(c *client.Conn) error {
		if s.tlsCert != "" {
			c.SetTLSConfig(&tls.Config{InsecureSkipVerify: true})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// go-mysql has no context support past the dial: close the socket when
	// ctx ends so Execute returns. (conn.Close would race with the reader.)
	raw := conn.Conn.Conn
	defer context.AfterFunc(ctx, func() { raw.Close() })()
	r, err := conn.Execute(sql, args...)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	defer r.Close()
	if r.Resultset == nil {
		return nil, nil
	}
	rows := make([][]*string, len(r.Values))
	for i, vals := range r.Values {
		rows[i] = make([]*string, len(vals))
		for j := range vals {
			rows[i][j] = fieldString(&vals[j])
		}
	}
	return rows, nil
}

// StartReplica starts a server that replicates primary by GTID, as a
// failover candidate: it logs what it applies (log_slave_updates, so its
// binlog has the primary's transactions under their own GTIDs), in the
// same GTID domain, with its own server_id, and read-only until Promote.
// It replicates from the start of primary's binlog, so none of it may
// have been purged. opts.Settings override these settings as in Start.
func StartReplica(ctx context.Context, primary *Server, opts Options) (*Server, error) {
	rows, err := primary.Query(ctx, "", "SELECT @@server_id, @@gtid_domain_id")
	if err != nil {
		return nil, fmt.Errorf("mysqltest: read the primary's server_id: %w", err)
	}
	serverID, _ := strconv.Atoi(*rows[0][0])
	settings := map[string]string{
		"server-id":         strconv.Itoa(serverID + 1),
		"gtid-domain-id":    *rows[0][1],
		"log-slave-updates": "ON",
		"read-only":         "ON",
	}
	for k, v := range opts.Settings {
		settings[strings.ReplaceAll(k, "_", "-")] = v
	}
	opts.Settings = settings
	r, err := Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	for _, q := range []string{
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = %d, MASTER_USER = 'root', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1", primary.port),
		"START SLAVE",
	} {
		if err := r.Exec(ctx, "", q); err != nil {
			r.Stop()
			return nil, fmt.Errorf("mysqltest: %s: %w", q, err)
		}
	}
	if err := r.WaitReplicated(ctx, primary); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// NewReplica is StartReplica for tests: it fails the test on error and
// stops the replica when the test ends.
func NewReplica(t testing.TB, primary *Server, opts ...Options) *Server {
	t.Helper()
	SkipShort(t)
	if len(opts) > 1 {
		t.Fatalf("mysqltest.NewReplica: at most one Options, got %d", len(opts))
	}
	var o Options
	if len(opts) == 1 {
		o = opts[0]
	}
	r, err := StartReplica(context.Background(), primary, o)
	if err != nil {
		t.Fatalf("mysqltest: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("mysqltest: stop replica: %v", err)
		}
	})
	return r
}

// WaitReplicated waits until s, a replica, has applied every transaction
// primary has logged so far.
func (s *Server) WaitReplicated(ctx context.Context, primary *Server) error {
	rows, err := primary.Query(ctx, "", "SELECT @@GLOBAL.gtid_binlog_pos")
	if err != nil {
		return fmt.Errorf("mysqltest: read the primary's GTID position: %w", err)
	}
	pos := *rows[0][0]
	rows, err = s.Query(ctx, "", "SELECT MASTER_GTID_WAIT(?, ?)", pos, readyTimeout.Seconds())
	if err != nil {
		return fmt.Errorf("mysqltest: wait for the replica to reach %s: %w", pos, err)
	}
	if rows[0][0] == nil || *rows[0][0] != "0" {
		status, _ := s.Query(ctx, "", "SELECT @@GLOBAL.gtid_slave_pos")
		var at string
		if len(status) == 1 && status[0][0] != nil {
			at = *status[0][0]
		}
		return fmt.Errorf("mysqltest: the replica did not reach the primary's %s within %v (it is at %q); its log:\n%s", pos, readyTimeout, at, s.out.LastLines(20))
	}
	return nil
}

// StopReplication stops applying the primary's transactions (STOP SLAVE):
// what the primary logs from then on, the replica lacks.
func (s *Server) StopReplication(ctx context.Context) error {
	return s.Exec(ctx, "", "STOP SLAVE")
}

// Promote makes a replica a primary, as a failover does: it stops
// replicating, forgets its primary and becomes writable.
func (s *Server) Promote(ctx context.Context) error {
	for _, q := range []string{"STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = OFF"} {
		if err := s.Exec(ctx, "", q); err != nil {
			return fmt.Errorf("mysqltest: promote: %s: %w", q, err)
		}
	}
	return nil
}

// PurgeBinlogs rotates the binlog (FLUSH BINARY LOGS) and purges everything
// before the new file (PURGE BINARY LOGS TO ...), so earlier positions are
// gone — used to test gap detection.
func (s *Server) PurgeBinlogs(ctx context.Context) error {
	if err := s.Exec(ctx, "", "FLUSH BINARY LOGS"); err != nil {
		return err
	}
	rows, err := s.Query(ctx, "", "SHOW MASTER STATUS")
	if err != nil {
		return err
	}
	if len(rows) != 1 || rows[0][0] == nil {
		return errors.New("mysqltest: SHOW MASTER STATUS returned no binlog file")
	}
	current := *rows[0][0]
	// MariaDB keeps a binlog file until InnoDB has made its transactions
	// durable (the binlog checkpoint); with innodb_flush_log_at_trx_commit=2
	// that takes up to a second, and PURGE silently skips the file until then.
	deadline := time.Now().Add(readyTimeout)
	for {
		if err := s.Exec(ctx, "", "PURGE BINARY LOGS TO "+quoteString(current)); err != nil {
			return err
		}
		logs, err := s.Query(ctx, "", "SHOW BINARY LOGS")
		if err != nil {
			return err
		}
		if len(logs) == 0 || logs[0][0] == nil || *logs[0][0] == current {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mysqltest: binlog %s still not purged after %v", *logs[0][0], readyTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
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
		return errors.New("mysqltest: Restart after Stop")
	}
	// Whatever halt reports (a crash, a forced kill), the old process is
	// gone afterwards, which is all a restart needs.
	_ = s.halt()
	return s.launch(ctx)
}

// installTLS copies the certificate and key beside the data dir, owned
// by the server's account: a t.TempDir() is not traversable by it.
func (s *Server) installTLS(cert, key string) error {
	if cert == "" || key == "" {
		return errors.New("mysqltest: TLSCert and TLSKey go together")
	}
	dir := filepath.Join(s.dir, "tls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []struct{ from, to *string }{{&cert, &s.tlsCert}, {&key, &s.tlsKey}} {
		b, err := os.ReadFile(*f.from)
		if err != nil {
			return fmt.Errorf("mysqltest: %w", err)
		}
		*f.to = filepath.Join(dir, filepath.Base(*f.from))
		if err := os.WriteFile(*f.to, b, 0o600); err != nil {
			return err
		}
		if s.cred != nil {
			if err := os.Chown(*f.to, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return err
			}
		}
	}
	return nil
}

// setup prepares the dir layout, the log and, if needed, a new data dir.
func (s *Server) setup(ctx context.Context, installDB string, log io.Writer) error {
	var err error
	if os.Geteuid() == 0 {
		// mariadbd refuses to run as root unless told --user=root. Prefer
		// the mysql account, switched to by exec itself so Pdeathsig
		// survives (a setuid inside mariadbd would clear it).
		if s.cred, err = proctest.Credential("mysql"); err != nil {
			s.userFlags = []string{"--user=root"}
		}
	}
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "mysqltest-"); err != nil {
			return err
		}
		s.ownDir = true
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	if s.dir, err = filepath.Abs(s.dir); err != nil {
		return err
	}
	s.sockDir = filepath.Join(s.dir, "sock")
	if len(s.socket()) > maxSocketPath {
		if s.sockDir, err = os.MkdirTemp("", "mysqltest-sock-"); err != nil {
			return err
		}
		s.ownSock = true
	}
	if s.cred != nil {
		if err := proctest.Traversable(s.dir, "mysql"); err != nil {
			return err
		}
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{s.dataDir(), 0o700}, {s.tmpDir(), 0o700}, {s.sockDir, 0o755}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return err
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // MkdirTemp made sockDir 0700
			return err
		}
		if s.cred != nil {
			if err := os.Chown(d.path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return err
			}
		}
	}
	if log == nil {
		s.logPath = filepath.Join(s.dir, "mariadb.log")
		if s.logFile, err = os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return err
		}
		log = s.logFile
	}
	s.out = proctest.NewOutput(log)
	if _, err := os.Stat(filepath.Join(s.dataDir(), "mysql")); err == nil {
		return nil // reuse the existing data dir
	}
	template, err := s.template(ctx, installDB)
	if err != nil {
		return err
	}
	// cp -a keeps the owner (the mysql account) and modes of the template.
	if out, err := exec.CommandContext(ctx, "cp", "-a", template+"/.", s.dataDir()).CombinedOutput(); err != nil {
		return fmt.Errorf("mysqltest: copy the data dir template: %v\n%s", err, out)
	}
	return nil
}

// template returns a freshly bootstrapped data dir, made once per machine and
// MariaDB version and shared by every server: mariadb-install-db takes a
// while, and its bootstrap server sometimes crashes (signal 11) when several
// run at once, so it is run rarely, and again when it crashes.
func (s *Server) template(ctx context.Context, installDB string) (string, error) {
	version, err := exec.CommandContext(ctx, s.mariadbd, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("mysqltest: %s --version: %w", s.mariadbd, err)
	}
	h := fnv.New32a()
	h.Write(version)
	fmt.Fprint(h, s.userFlags, s.cred != nil)
	path := filepath.Join(os.TempDir(), fmt.Sprintf("sluice-mariadb-template-%08x", h.Sum32()))
	if _, err := os.Stat(filepath.Join(path, "mysql")); err == nil {
		return path, nil
	}
	var last error
	for attempt := 1; attempt <= 5; attempt++ {
		build, err := os.MkdirTemp(os.TempDir(), "sluice-mariadb-template-build-")
		if err != nil {
			return "", err
		}
		last = s.bootstrap(ctx, installDB, build)
		if last == nil {
			// Another process may have won the race: its template is as good.
			if err := os.Rename(build, path); err != nil {
				os.RemoveAll(build)
			}
			if _, err := os.Stat(filepath.Join(path, "mysql")); err == nil {
				return path, nil
			}
			last = fmt.Errorf("mysqltest: template %s missing after bootstrap", path)
		}
		os.RemoveAll(build)
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
	return "", last
}

func (s *Server) bootstrap(ctx context.Context, installDB, dataDir string) error {
	if s.cred != nil {
		if err := os.Chmod(dataDir, 0o700); err != nil {
			return err
		}
		if err := os.Chown(dataDir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return err
		}
	}
	args := append([]string{"--no-defaults", "--datadir=" + dataDir,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"}, s.userFlags...)
	cmd := exec.CommandContext(ctx, installDB, args...)
	cmd.Dir = dataDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	s.out.Write(out)
	if err != nil {
		return fmt.Errorf("mysqltest: mariadb-install-db: %v\n%s", err, proctest.LastLines(out, 20))
	}
	return nil
}

// launch starts mariadbd on s.port and waits until it accepts connections.
func (s *Server) launch(ctx context.Context) error {
	cmd := exec.Command(s.mariadbd, s.args()...)
	cmd.Dir = s.dir
	// Without --log-error mariadbd logs to stderr, which goes to Options.Log
	// and the tail kept for error messages.
	s.out.Reset()
	fmt.Fprintf(s.out, "mysqltest: starting mariadbd on %s, data dir %s\n", s.Addr(), s.dataDir())
	p, err := proctest.Start("mysqltest: mariadbd", cmd, s.cred, s.out)
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
		return s.Exec(ctx, "", "SELECT 1")
	})
}

// halt asks mariadbd for a normal shutdown (SIGTERM) and kills it if that
// takes too long.
func (s *Server) halt() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	return p.Stop(syscall.SIGTERM, stopTimeout)
}

// cleanup releases what setup acquired; the server must not be running.
func (s *Server) cleanup() {
	if s.logFile != nil {
		s.logFile.Close()
		s.logFile = nil
	}
	if s.ownSock {
		os.RemoveAll(s.sockDir)
	}
	if s.ownDir {
		os.RemoveAll(s.dir)
	}
}

// args returns the mariadbd command line: defaults overridden by
// Options.Settings.
func (s *Server) args() []string {
	conf := map[string]string{
		"datadir": s.dataDir(),
		// Its own: servers started in parallel share no temporary files
		// (a shared /tmp failed an information_schema query with "Error
		// on delete", MySQL error 6).
		"tmpdir":                          s.tmpDir(),
		"socket":                          s.socket(),
		"pid-file":                        filepath.Join(s.dataDir(), "mariadbd.pid"),
		"port":                            strconv.Itoa(s.port),
		"bind-address":                    "127.0.0.1",
		"skip-name-resolve":               "",
		"server-id":                       "1",
		"log-bin":                         filepath.Join(s.dataDir(), "binlog"),
		"binlog-format":                   "ROW",
		"binlog-row-image":                "FULL",
		"binlog-row-metadata":             "FULL",
		"gtid-strict-mode":                "ON",
		"log-slave-updates":               "ON",
		"innodb-buffer-pool-size":         "64M",
		"innodb-log-file-size":            "48M",
		"innodb-flush-log-at-trx-commit":  "2",
		"sync-binlog":                     "0",
		"max-connections":                 "200",
		"character-set-server":            "utf8mb4",
		"collation-server":                "utf8mb4_bin",
		"default-time-zone":               "+00:00",
		"explicit-defaults-for-timestamp": "ON",
	}
	if s.tlsCert != "" {
		conf["ssl-cert"], conf["ssl-key"] = s.tlsCert, s.tlsKey
	}
	for k, v := range s.settings {
		conf[strings.ReplaceAll(k, "_", "-")] = v
	}
	args := make([]string, 0, len(conf))
	for k, v := range conf {
		if v == "" {
			args = append(args, "--"+k)
		} else {
			args = append(args, "--"+k+"="+v)
		}
	}
	sort.Strings(args)
	// --no-defaults must come first.
	return append(append([]string{"--no-defaults"}, args...), s.userFlags...)
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) tmpDir() string  { return filepath.Join(s.dir, "tmp") }
func (s *Server) socket() string  { return filepath.Join(s.sockDir, "mysqld.sock") }

// fieldString renders a text- or binary-protocol value; NULL is nil.
func fieldString(fv *mysql.FieldValue) *string {
	var v string
	switch fv.Type {
	case mysql.FieldValueTypeNull:
		return nil
	case mysql.FieldValueTypeUnsigned:
		v = strconv.FormatUint(fv.AsUint64(), 10)
	case mysql.FieldValueTypeSigned:
		v = strconv.FormatInt(fv.AsInt64(), 10)
	case mysql.FieldValueTypeFloat:
		v = strconv.FormatFloat(fv.AsFloat64(), 'g', -1, 64)
	default:
		v = string(fv.AsString())
	}
	return &v
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

func quoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// findBin looks in PATH and in the sbin dirs a non-root PATH may lack.
func findBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}
