package pgtest_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
)

// The server keeps what every test helper's server promises.
func TestServer(t *testing.T) {
	sourcetest.RunServer(t, sourcetest.ServerHarness{
		Start: func(ctx context.Context, dir string, settings map[string]string) (sourcetest.Server, error) {
			s, err := pgtest.Start(ctx, pgtest.Options{Dir: dir, Settings: settings})
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		Setting: "wal_level", Value: "replica", Show: "SHOW wal_level",
		BadSettingSays: `unrecognized configuration parameter "no_such_setting"`,
		StoppedSays:    "database system is shut down",
		PIDFile:        "data/postmaster.pid",
	})
}

// The server is ready for logical replication, and Exec and Query bind
// arguments.
func TestStart(t *testing.T) {
	t.Parallel()
	s := pgtest.New(t)

	value := func(db, sql string, args ...any) string {
		t.Helper()
		rows, err := s.Query(t.Context(), db, sql, args...)
		if err != nil || len(rows) != 1 || rows[0][0] == nil {
			t.Fatalf("%s: %d rows, %v", sql, len(rows), err)
		}
		return *rows[0][0]
	}
	if got := value("postgres", "SHOW wal_level"); got != "logical" {
		t.Errorf("wal_level = %q, want logical", got)
	}
	if err := s.CreateDatabase(t.Context(), "shop"); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec(t.Context(), "shop", "CREATE TABLE orders (id int PRIMARY KEY, item text); INSERT INTO orders VALUES (1, 'tea')"); err != nil {
		t.Fatalf("Exec of two statements: %v", err)
	}
	if err := s.Exec(t.Context(), "shop", "INSERT INTO orders VALUES ($1, $2)", 2, "cake"); err != nil {
		t.Fatalf("Exec with args: %v", err)
	}
	if got := value("shop", "SELECT item FROM orders WHERE id = $1", 2); got != "cake" {
		t.Errorf("Query with args = %q, want cake", got)
	}

	rc, err := pgconn.Connect(t.Context(), s.DSN("shop")+"&replication=database")
	if err != nil {
		t.Fatalf("replication connect: %v", err)
	}
	defer rc.Close(context.Background())
	res, err := rc.Exec(t.Context(), "IDENTIFY_SYSTEM").ReadAll()
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

func TestPassword(t *testing.T) {
	t.Parallel()
	s := pgtest.New(t, pgtest.Options{Password: "pw 1:@/x"})
	rows, err := s.Query(t.Context(), "postgres", "SELECT current_user::text")
	if err != nil || len(rows) != 1 || *rows[0][0] != "postgres" {
		t.Errorf("current_user: %d rows, %v; want postgres", len(rows), err)
	}
	noPassword := "postgres://postgres@127.0.0.1:" + strconv.Itoa(s.Port()) + "/postgres?sslmode=disable"
	conn, err := pgx.Connect(t.Context(), noPassword)
	if err == nil {
		conn.Close(context.Background())
		t.Fatal("a TCP login without the password was let in")
	}
	if !strings.Contains(err.Error(), "password") {
		t.Errorf("login without password: %v, want a password error", err)
	}
}
