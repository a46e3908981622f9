package mysqltest_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// row runs sql and returns its single row, NULLs as "NULL".
func row(t *testing.T, s *mysqltest.Server, db, sql string) []string {
	t.Helper()
	rows, err := s.Query(ctx(t), db, sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if len(rows) != 1 {
		t.Fatalf("%s: got %d rows, want 1", sql, len(rows))
	}
	out := make([]string, len(rows[0]))
	for i, v := range rows[0] {
		out[i] = "NULL"
		if v != nil {
			out[i] = *v
		}
	}
	return out
}

func TestStart(t *testing.T) {
	t.Parallel()
	s := mysqltest.New(t)

	got := strings.Join(row(t, s, "", "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@gtid_strict_mode, @@binlog_row_metadata"), " ")
	if got != "1 ROW FULL 1 FULL" {
		t.Errorf("binlog settings = %q, want 1 ROW FULL 1 FULL", got)
	}
	if want := "root:@tcp(127.0.0.1:" + strconv.Itoa(s.Port()) + ")/shop"; s.DSN("shop") != want {
		t.Errorf("DSN = %q, want %q", s.DSN("shop"), want)
	}
	for range 2 { // the second call must not fail
		if err := s.CreateDatabase(ctx(t), "shop"); err != nil {
			t.Fatalf("CreateDatabase: %v", err)
		}
	}
	if err := s.Exec(ctx(t), "shop", "CREATE TABLE orders (id int PRIMARY KEY, item varchar(20), note text)"); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if err := s.Exec(ctx(t), "shop", "INSERT INTO orders VALUES (1, 'tea', NULL)"); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if err := s.Exec(ctx(t), "shop", "INSERT INTO orders VALUES (?, ?, ?)", 2, "cake", "yum"); err != nil {
		t.Fatalf("Exec with args: %v", err)
	}
	rows, err := s.Query(ctx(t), "shop", "SELECT id, item, note FROM orders WHERE id >= ? ORDER BY id", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || *rows[0][0] != "1" || *rows[0][1] != "tea" || rows[0][2] != nil || *rows[1][2] != "yum" {
		t.Errorf("rows = %v", rows)
	}
	if file := row(t, s, "", "SHOW MASTER STATUS")[0]; !strings.HasPrefix(file, "binlog.") {
		t.Errorf("SHOW MASTER STATUS file = %q", file)
	}
	if pos := row(t, s, "", "SELECT @@gtid_binlog_pos")[0]; pos == "" {
		t.Error("@@gtid_binlog_pos is empty after an insert")
	}
}

func TestSettingsOverride(t *testing.T) {
	t.Parallel()
	s := mysqltest.New(t, mysqltest.Options{Settings: map[string]string{"binlog_format": "STATEMENT"}})
	if got := row(t, s, "", "SELECT @@binlog_format")[0]; got != "STATEMENT" {
		t.Errorf("binlog_format = %q, want STATEMENT", got)
	}
}

func TestBadSettingShowsLog(t *testing.T) {
	mysqltest.SkipShort(t)
	t.Parallel()
	s, err := mysqltest.Start(ctx(t), mysqltest.Options{Settings: map[string]string{"no_such_setting": "1"}})
	if err == nil {
		s.Stop()
		t.Fatal("Start succeeded with an unknown setting")
	}
	if !strings.Contains(err.Error(), "no-such-setting") {
		t.Errorf("error does not carry the server log:\n%v", err)
	}
	t.Logf("Start error, as expected:\n%v", err)
}

func TestHaltRestartPurge(t *testing.T) {
	t.Parallel()
	s := mysqltest.New(t)
	if err := s.Exec(ctx(t), "mysql", "CREATE TABLE kept (v text)"); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec(ctx(t), "mysql", "INSERT INTO kept VALUES ('still here')"); err != nil {
		t.Fatal(err)
	}
	port := s.Port()
	if err := s.Halt(); err != nil {
		t.Fatalf("Halt: %v", err)
	}
	if err := s.Exec(ctx(t), "", "SELECT 1"); err == nil {
		t.Fatal("queried a halted server")
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
	if got := row(t, s, "mysql", "SELECT v FROM kept")[0]; got != "still here" {
		t.Errorf("after restart got %q", got)
	}

	logs, err := s.Query(ctx(t), "", "SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	if len(logs) < 2 {
		t.Errorf("expected several binlogs after a restart, got %d", len(logs))
	}
	if err := s.PurgeBinlogs(ctx(t)); err != nil {
		t.Fatalf("PurgeBinlogs: %v", err)
	}
	logs, err = s.Query(ctx(t), "", "SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	if current := row(t, s, "", "SHOW MASTER STATUS")[0]; len(logs) != 1 || *logs[0][0] != current {
		t.Errorf("after purge SHOW BINARY LOGS = %d files (first %q), want just %s", len(logs), *logs[0][0], current)
	}
}

func TestStopTwice(t *testing.T) {
	mysqltest.SkipShort(t)
	t.Parallel()
	s, err := mysqltest.Start(ctx(t), mysqltest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	b, err := os.ReadFile(filepath.Join(dir, "data", "mariadbd.pid"))
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
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
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("mariadbd pid %d still exists after Stop (kill 0: %v)", pid, err)
	}
}

// A caller-supplied dir (a 0700-parented t.TempDir, which matters when running
// as root) is kept by Stop and its data reused by the next Start.
func TestDirReused(t *testing.T) {
	mysqltest.SkipShort(t)
	t.Parallel()
	dir := t.TempDir()
	var log syncBuffer

	s, err := mysqltest.Start(ctx(t), mysqltest.Options{Dir: dir, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), s.Addr()) {
		t.Errorf("log lacks the start line with the address:\n%s", log.String())
	}
	if err := s.CreateDatabase(ctx(t), "keep"); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "Shutdown complete") {
		t.Errorf("log lacks the orderly shutdown:\n%s", log.String())
	}

	s = mysqltest.New(t, mysqltest.Options{Dir: dir})
	if got := row(t, s, "", "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'keep'")[0]; got != "1" {
		t.Errorf("reused data dir lacks database keep (count %s)", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "mariadb.log")); err != nil {
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
