package sourcetest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a real database server that a test helper package runs
// (pgtest, mysqltest): what RunServer checks of it.
type Server interface {
	Port() int
	// Dir holds the server's data and its log.
	Dir() string
	// LogFile is where the server logs when no writer took its log.
	LogFile() string
	// CreateDatabase creates a database; an existing one is no error.
	CreateDatabase(ctx context.Context, name string) error
	Exec(ctx context.Context, db, sql string, args ...any) error
	// Query returns every row of a statement in text form, NULL as nil.
	Query(ctx context.Context, db, sql string, args ...any) ([][]*string, error)
	// Halt stops the server and keeps its data; Restart starts it again
	// on the same port.
	Halt() error
	Restart(ctx context.Context) error
	// Stop stops the server and removes its dir if Start made it; again,
	// it does nothing.
	Stop() error
}

// ServerHarness starts one kind of server for RunServer.
type ServerHarness struct {
	// Start starts a server that keeps its data in dir ("" = a temp dir
	// of its own), logging to its LogFile, with extra settings.
	Start func(ctx context.Context, dir string, settings map[string]string) (Server, error)
	// Setting, with a value other than its default, is a setting Start
	// takes; Show is a query that reads it back.
	Setting, Value, Show string
	// BadSettingSays is what the server logs of the unknown setting
	// no_such_setting, which Start's error must quote.
	BadSettingSays string
	// StoppedSays is what the server logs when it stops in order.
	StoppedSays string
	// PIDFile is the server's pid file, relative to Dir.
	PIDFile string
}

// RunServer checks a test helper's server, each part in parallel on a
// server of its own: it starts, takes databases, tables and settings;
// an unknown setting fails Start with the server's own words; Halt keeps
// the data and Restart brings it back on the same port; Stop ends the
// process and removes the dir it made, twice over; a dir given to Start
// is kept, and its data reused by the next Start. Under -short it skips.
func RunServer(t *testing.T, h ServerHarness) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real servers: not in -short")
	}
	start := func(t *testing.T, dir string, settings map[string]string) Server {
		t.Helper()
		s, err := h.Start(serverCtx(t), dir, settings)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := s.Stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
		})
		return s
	}
	value := func(t *testing.T, s Server, db, sql string) string {
		t.Helper()
		rows, err := s.Query(serverCtx(t), db, sql)
		if err != nil || len(rows) != 1 || len(rows[0]) != 1 {
			t.Fatalf("%s: %d rows, %v; want one value", sql, len(rows), err)
		}
		if rows[0][0] == nil {
			return "NULL"
		}
		return *rows[0][0]
	}

	t.Run("start", func(t *testing.T) {
		t.Parallel()
		s := start(t, "", nil)
		ctx := serverCtx(t)
		for range 2 { // the second call must not fail
			if err := s.CreateDatabase(ctx, "shop"); err != nil {
				t.Fatalf("CreateDatabase: %v", err)
			}
		}
		for _, sql := range []string{"CREATE TABLE orders (id int PRIMARY KEY, item varchar(20), note text)", "INSERT INTO orders VALUES (1, 'tea', NULL)"} {
			if err := s.Exec(ctx, "shop", sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		rows, err := s.Query(ctx, "shop", "SELECT id, item, note FROM orders")
		if err != nil || len(rows) != 1 || len(rows[0]) != 3 || *rows[0][0] != "1" || *rows[0][1] != "tea" || rows[0][2] != nil {
			t.Errorf("%d rows, %v; want 1, tea, NULL", len(rows), err)
		}
	})

	t.Run("settings", func(t *testing.T) {
		t.Parallel()
		s := start(t, "", map[string]string{h.Setting: h.Value})
		if got := value(t, s, "", h.Show); got != h.Value {
			t.Errorf("%s = %q, want %q", h.Show, got, h.Value)
		}
	})

	t.Run("bad setting", func(t *testing.T) {
		t.Parallel()
		s, err := h.Start(serverCtx(t), "", map[string]string{"no_such_setting": "1"})
		if err == nil {
			s.Stop()
			t.Fatal("Start succeeded with an unknown setting")
		}
		if !strings.Contains(err.Error(), h.BadSettingSays) {
			t.Errorf("the error does not carry the server's log (%q):\n%v", h.BadSettingSays, err)
		}
	})

	t.Run("halt and restart", func(t *testing.T) {
		t.Parallel()
		s := start(t, "", nil)
		ctx := serverCtx(t)
		if err := s.CreateDatabase(ctx, "keep"); err != nil {
			t.Fatal(err)
		}
		for _, sql := range []string{"CREATE TABLE kept (v text)", "INSERT INTO kept VALUES ('still here')"} {
			if err := s.Exec(ctx, "keep", sql); err != nil {
				t.Fatal(err)
			}
		}
		port := s.Port()
		if err := s.Halt(); err != nil {
			t.Fatalf("Halt: %v", err)
		}
		if err := s.Exec(ctx, "keep", "SELECT 1"); err == nil {
			t.Fatal("a halted server ran a statement")
		}
		if err := s.Halt(); err != nil {
			t.Fatalf("second Halt: %v", err)
		}
		if err := s.Restart(ctx); err != nil {
			t.Fatalf("Restart: %v", err)
		}
		if s.Port() != port {
			t.Errorf("port changed from %d to %d", port, s.Port())
		}
		if got := value(t, s, "keep", "SELECT v FROM kept"); got != "still here" {
			t.Errorf("after the restart: %q", got)
		}
	})

	t.Run("stop", func(t *testing.T) {
		t.Parallel()
		s, err := h.Start(serverCtx(t), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		dir := s.Dir()
		b, err := os.ReadFile(filepath.Join(dir, h.PIDFile))
		if err != nil {
			t.Fatalf("pid file: %v", err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		pid, err := strconv.Atoi(strings.TrimSpace(first))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 { // the second call must not fail
			if err := s.Stop(); err != nil {
				t.Fatalf("Stop %d: %v", i+1, err)
			}
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("temp dir %s still there (stat: %v)", dir, err)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("the server's process %d is still there after Stop (kill 0: %v)", pid, err)
		}
	})

	// A dir of the caller's (a 0700-parented t.TempDir, which matters when
	// running as root) is kept by Stop and its data reused by Start.
	t.Run("dir reused", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s, err := h.Start(serverCtx(t), dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CreateDatabase(serverCtx(t), "keep"); err != nil {
			t.Fatal(err)
		}
		if err := s.Exec(serverCtx(t), "keep", "CREATE TABLE kept (v int)"); err != nil {
			t.Fatal(err)
		}
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(s.LogFile())
		if err != nil || !strings.HasPrefix(s.LogFile(), dir) {
			t.Fatalf("log file %s: %v", s.LogFile(), err)
		}
		if log := string(b); !strings.Contains(log, "127.0.0.1:"+strconv.Itoa(s.Port())) || !strings.Contains(log, h.StoppedSays) {
			t.Errorf("the log lacks the start line with the address, or %q at the stop:\n%s", h.StoppedSays, log)
		}

		s = start(t, dir, nil)
		if got := value(t, s, "keep", "SELECT count(*) FROM kept"); got != "0" {
			t.Errorf("the reused dir's table kept has %s rows, or is gone", got)
		}
	})
}

func serverCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
