package mysqltest_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
)

// row runs sql and returns its single row, NULLs as "NULL".
func row(t *testing.T, s *mysqltest.Server, db, sql string) []string {
	t.Helper()
	rows, err := s.Query(t.Context(), db, sql)
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

// The server keeps what every test helper's server promises.
func TestServer(t *testing.T) {
	sourcetest.RunServer(t, sourcetest.ServerHarness{
		Start: func(ctx context.Context, dir string, settings map[string]string) (sourcetest.Server, error) {
			s, err := mysqltest.Start(ctx, mysqltest.Options{Dir: dir, Settings: settings})
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		Setting: "binlog_format", Value: "STATEMENT", Show: "SELECT @@binlog_format",
		BadSettingSays: "no-such-setting",
		StoppedSays:    "Shutdown complete",
		PIDFile:        "data/mariadbd.pid",
	})
}

// The server writes the binlog CDC needs, and Exec and Query bind
// arguments.
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
	if err := s.CreateDatabase(t.Context(), "shop"); err != nil {
		t.Fatalf("CreateDatabase: %v", err)
	}
	if err := s.Exec(t.Context(), "shop", "CREATE TABLE orders (id int PRIMARY KEY, item varchar(20), note text)"); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if err := s.Exec(t.Context(), "shop", "INSERT INTO orders VALUES (1, 'tea', NULL)"); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if err := s.Exec(t.Context(), "shop", "INSERT INTO orders VALUES (?, ?, ?)", 2, "cake", "yum"); err != nil {
		t.Fatalf("Exec with args: %v", err)
	}
	rows, err := s.Query(t.Context(), "shop", "SELECT id, item, note FROM orders WHERE id >= ? ORDER BY id", 1)
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

// PurgeBinlogs leaves the current binlog alone.
func TestPurgeBinlogs(t *testing.T) {
	t.Parallel()
	s := mysqltest.New(t)
	if err := s.Exec(t.Context(), "", "FLUSH BINARY LOGS"); err != nil {
		t.Fatal(err)
	}
	logs, err := s.Query(t.Context(), "", "SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	if len(logs) < 2 {
		t.Errorf("expected several binlogs after a flush, got %d", len(logs))
	}
	if err := s.PurgeBinlogs(t.Context()); err != nil {
		t.Fatalf("PurgeBinlogs: %v", err)
	}
	logs, err = s.Query(t.Context(), "", "SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	if current := row(t, s, "", "SHOW MASTER STATUS")[0]; len(logs) != 1 || *logs[0][0] != current {
		t.Errorf("after purge SHOW BINARY LOGS = %d files (first %q), want just %s", len(logs), *logs[0][0], current)
	}
}
