package pgtest_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func query(t *testing.T, dsn, sql string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx(t), dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx(t), sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func TestStart(t *testing.T) {
	t.Parallel()
	s := pgtest.New(t)

	if got := query(t, s.DSN("postgres"), "SHOW wal_level"); got != "logical" {
		t.Errorf("wal_level = %q, want logical", got)
	}
	for range 2 { // the second call must not fail
		if err := s.CreateDatabase(ctx(t), "shop"); err != nil {
			t.Fatalf("CreateDatabase: %v", err)
		}
	}
	if err := s.Exec(ctx(t), "shop", "CREATE TABLE orders (id int PRIMARY KEY, item text); INSERT INTO orders VALUES (1, 'tea')"); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if err := s.Exec(ctx(t), "shop", "INSERT INTO orders VALUES ($1, $2)", 2, "cake"); err != nil {
		t.Fatalf("Exec with args: %v", err)
	}
	if got := query(t, s.DSN("shop"), "SELECT count(*)::text FROM orders"); got != "2" {
		t.Errorf("count = %s, want 2", got)
	}

	rc, err := pgconn.Connect(ctx(t), s.DSN("shop")+"&replication=database")
	if err != nil {
		t.Fatalf("replication connect: %v", err)
	}
	defer rc.Close(context.Background())
	res, err := rc.Exec(ctx(t), "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		t.Fatalf("IDENTIFY_SYSTEM: %v", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		t.Fatalf("IDENTIFY_SYSTEM returned %+v", res)
	}
	if db := string(res[0].Rows[0][3]); db != "shop" {
		t.Errorf("IDENTIFY_SYSTEM dbname = %q, want shop", db)
	}
}

func TestSettingsOverride(t *testing.T) {
	t.Parallel()
	s := pgtest.New(t, pgtest.Options{Settings: map[string]string{"wal_level": "replica"}})
	if got := query(t, s.DSN("postgres"), "SHOW wal_level"); got != "replica" {
		t.Errorf("wal_level = %q, want replica", got)
	}
}

func TestBadSettingShowsLog(t *testing.T) {
	pgtest.SkipShort(t)
	t.Parallel()
	s, err := pgtest.Start(ctx(t), pgtest.Options{Settings: map[string]string{"no_such_setting": "1"}})
	if err == nil {
		s.Stop()
		t.Fatal("Start succeeded with an unknown setting")
	}
	if !strings.Contains(err.Error(), `unrecognized configuration parameter "no_such_setting"`) {
		t.Errorf("error does not carry the server log:\n%v", err)
	}
	t.Logf("Start error, as expected:\n%v", err)
}

func TestHaltRestart(t *testing.T) {
	t.Parallel()
	s := pgtest.New(t)
	if err := s.Exec(ctx(t), "postgres", "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')"); err != nil {
		t.Fatal(err)
	}
	port := s.Port()
	if err := s.Halt(); err != nil {
		t.Fatalf("Halt: %v", err)
	}
	if conn, err := pgx.Connect(ctx(t), s.DSN("postgres")); err == nil {
		conn.Close(context.Background())
		t.Fatal("connected to a halted server")
	}
	if err := s.Halt(); err != nil {
		t.Fatalf("second Halt: %v", err)
	}
	if err := s.Restart(ctx(t)); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if s.Port() != port {
		t.Errorf("port changed from %d to %d", port, s.Port())
	}
	if got := query(t, s.DSN("postgres"), "SELECT v FROM kept"); got != "still here" {
		t.Errorf("after restart got %q", got)
	}
}

func TestStopTwice(t *testing.T) {
	pgtest.SkipShort(t)
	t.Parallel()
	s, err := pgtest.Start(ctx(t), pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Fatalf("data dir: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s still there (stat err %v)", dir, err)
	}
}

// A caller-supplied dir (here a 0700-parented t.TempDir, which matters when
// running as root) is kept by Stop and its cluster reused by the next Start.
func TestDirReused(t *testing.T) {
	pgtest.SkipShort(t)
	t.Parallel()
	dir := t.TempDir()
	var log syncBuffer

	s, err := pgtest.Start(ctx(t), pgtest.Options{Dir: dir, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "127.0.0.1:"+strconv.Itoa(s.Port())) {
		t.Errorf("log lacks the start line with the port:\n%s", log.String())
	}
	if err := s.Exec(ctx(t), "postgres", "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}

	s = pgtest.New(t, pgtest.Options{Dir: dir})
	if got := query(t, s.DSN("postgres"), "SELECT v::text FROM kept"); got != "7" {
		t.Errorf("reused cluster has %q, want 7", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres.log")); err != nil {
		t.Errorf("log file: %v", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestPassword(t *testing.T) {
	t.Parallel()
	s := pgtest.New(t, pgtest.Options{Password: "pw 1:@/x"})
	if got := query(t, s.DSN("postgres"), "SELECT current_user::text"); got != "postgres" {
		t.Errorf("current_user = %q, want postgres", got)
	}
	noPassword := "postgres://postgres@127.0.0.1:" + strconv.Itoa(s.Port()) + "/postgres?sslmode=disable"
	conn, err := pgx.Connect(ctx(t), noPassword)
	if err == nil {
		conn.Close(context.Background())
		t.Fatal("a TCP login without the password was let in")
	}
	if !strings.Contains(err.Error(), "password") {
		t.Errorf("login without password: %v, want a password error", err)
	}
}
