package postgres_test

import (
	"context"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/postgres"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
)

// The PostgreSQL driver keeps the contract every driver keeps.
func TestConformance(t *testing.T) {
	// Every statement is logged, for the check that no filter text
	// becomes SQL.
	srv := pgtest.New(t, pgtest.Options{Settings: map[string]string{"log_statement": "all"}})
	ctx := context.Background()
	if err := srv.CreateDatabase(ctx, "conform"); err != nil {
		t.Fatal(err)
	}
	db := pgDB{srv: srv, textKeys: map[string]string{
		"C":                    `text COLLATE "C"`,
		"default":              "text", // the database's (initdb: C.UTF-8)
		"varchar C":            `varchar(40) COLLATE "C"`,
		"case-insensitive ICU": "text COLLATE conform_ci",
		"und-x-icu":            `text COLLATE "und-x-icu"`,
	}}
	// ICU collations exist when the server was built with ICU (Debian's is).
	if err := srv.Exec(ctx, "conform", "CREATE COLLATION conform_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"); err != nil {
		t.Logf("no ICU collations (%v): text keys of the C and the database's collation only", err)
		delete(db.textKeys, "case-insensitive ICU")
		delete(db.textKeys, "und-x-icu")
	}
	sourcetest.Run(t, sourcetest.Harness{
		Driver: postgres.Driver{},
		Spec:   sources.Spec{Config: sources.Config{Name: "conform", Kind: "postgres", DSN: srv.DSN("conform")}},
		DB:     db,
		LoseLog: func(ctx context.Context, spec sources.Spec) error {
			return srv.Exec(ctx, "conform", "SELECT pg_drop_replication_slot($1)", "sluice_"+spec.Name)
		},
		Lock:      db.lock,
		ParsedSQL: db.parsedSQL,
	})
}

// pgDB is the conform database as the suite writes to it.
type pgDB struct {
	srv      *pgtest.Server
	textKeys map[string]string
}

func (pgDB) Schema() string { return "public" }

func (d pgDB) Exec(ctx context.Context, stmts ...string) error {
	conn, err := pgx.Connect(ctx, d.srv.DSN("conform"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		return nil
	})
}

var pgTypes = map[sourcetest.Kind]string{
	sourcetest.Int: "integer", sourcetest.BigInt: "bigint", sourcetest.Decimal: "numeric(30,10)", sourcetest.Float: "double precision",
	sourcetest.Text: "text", sourcetest.Bool: "boolean", sourcetest.Timestamp: "timestamp(6)", sourcetest.Date: "date",
	sourcetest.Bytes: "bytea", sourcetest.JSON: "jsonb",
}

func (pgDB) Type(k sourcetest.Kind) string { return pgTypes[k] }
func (d pgDB) TextKeys() map[string]string { return d.textKeys }
func (pgDB) Ident(name string) string      { return pgx.Identifier{name}.Sanitize() }
func (pgDB) String(s string) string        { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
func (pgDB) Bytes(b []byte) string         { return `'\x` + hex.EncodeToString(b) + `'` }

// lock holds ACCESS EXCLUSIVE on table in a transaction of its own.
func (d pgDB) lock(ctx context.Context, table string) (func() error, error) {
	conn, err := pgx.Connect(ctx, d.srv.DSN("conform"))
	if err != nil {
		return nil, err
	}
	schema, name, _ := strings.Cut(table, ".")
	if _, err := conn.Exec(ctx, "BEGIN; LOCK TABLE "+pgx.Identifier{schema, name}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return func() error {
		defer conn.Close(context.Background())
		_, err := conn.Exec(context.Background(), "COMMIT")
		return err
	}, nil
}

// parsedSQL reads the statements from the server's log (log_statement =
// all): "statement:" and "execute" lines, and the statement an error line
// quotes; never the "parameters:" lines, which show the bound values.
func (d pgDB) parsedSQL(ctx context.Context) (func(context.Context) ([]string, error), error) {
	from, err := d.logMark(ctx)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]string, error) {
		to, err := d.logMark(ctx)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(d.srv.LogFile())
		if err != nil {
			return nil, err
		}
		var parsed []string
		for _, line := range strings.Split(string(b[from:to]), "\n") {
			if !strings.Contains(line, "parameters:") &&
				(strings.Contains(line, "statement:") || strings.Contains(line, "execute") || strings.Contains(line, "STATEMENT:")) {
				parsed = append(parsed, line)
			}
		}
		return parsed, nil
	}, nil
}

// logMark runs a statement that the log shows, waits until it does, and
// returns where in the log it is.
func (d pgDB) logMark(ctx context.Context) (int, error) {
	marker := "log-marker-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := d.srv.Exec(ctx, "conform", "SELECT '"+marker+"'"); err != nil {
		return 0, err
	}
	for {
		b, err := os.ReadFile(d.srv.LogFile())
		if err != nil {
			return 0, err
		}
		if i := strings.Index(string(b), marker); i >= 0 {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
