package mysql_test

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/mysql"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
)

// The MySQL driver keeps the contract every driver keeps, on MariaDB.
func TestConformance(t *testing.T) {
	srv := mysqltest.New(t)
	if err := srv.CreateDatabase(context.Background(), "conform"); err != nil {
		t.Fatal(err)
	}
	h := sourcetest.Harness{
		Driver: mysql.Driver{},
		Spec:   sources.Spec{Config: sources.Config{Name: "conform", Kind: "mysql", DSN: srv.DSN("conform")}},
		DB:     myDB{srv},
		Differs: map[string]string{
			// MySQL has no boolean type: BOOLEAN is TINYINT(1), and the
			// binlog carries the number.
			"boolean true":  "1",
			"boolean false": "0",
			// Not the databases but the drivers differ here: this one
			// writes the fraction digits DATETIME(6) declares, the
			// PostgreSQL one trims zeros as PostgreSQL's text form does.
			// Both are RFC 3339 of the same instant; which one the event
			// contract wants is still to settle.
			"timestamp whole second": `"2024-02-29T13:45:06.000000Z"`,
		},
		LoseLog: func(ctx context.Context, _ sources.Spec) error { return srv.PurgeBinlogs(ctx) },
		Lock: func(ctx context.Context, table string) (func() error, error) {
			conn, err := client.ConnectWithContext(ctx, srv.Addr(), "root", "", "", 0)
			if err != nil {
				return nil, err
			}
			db, name, _ := strings.Cut(table, ".")
			if _, err := conn.Execute("LOCK TABLES " + myDB{}.Ident(db) + "." + myDB{}.Ident(name) + " WRITE"); err != nil {
				conn.Close()
				return nil, err
			}
			return func() error {
				defer conn.Close()
				_, err := conn.Execute("UNLOCK TABLES")
				return err
			}, nil
		},
		ParsedSQL: func(ctx context.Context) (func(context.Context) ([]string, error), error) {
			return parsedSQL(ctx, srv)
		},
	}
	sourcetest.Run(t, h)

	// Positions as binlog file and offset, where GTIDs are not to be had.
	t.Run("file positions", func(t *testing.T) {
		h.Spec.Name = "conformfile"
		h.Spec.Settings = &mysql.Settings{Positions: "file"}
		sourcetest.RunParts(t, h, "resume", "reset")
	})
}

// myDB is the conform database as the suite writes to it.
type myDB struct{ srv *mysqltest.Server }

func (myDB) Schema() string { return "conform" }

func (d myDB) Exec(ctx context.Context, stmts ...string) error {
	conn, err := client.ConnectWithContext(ctx, d.srv.Addr(), "root", "", "conform", 0)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, s := range append(append([]string{"START TRANSACTION"}, stmts...), "COMMIT") {
		if _, err := conn.Execute(s); err != nil {
			return err
		}
	}
	return nil
}

var myTypes = map[sourcetest.Kind]string{
	sourcetest.Int: "INT", sourcetest.BigInt: "BIGINT", sourcetest.Decimal: "DECIMAL(30,10)", sourcetest.Float: "DOUBLE",
	sourcetest.Text: "TEXT", sourcetest.Bool: "BOOLEAN", sourcetest.Timestamp: "DATETIME(6)", sourcetest.Date: "DATE",
	sourcetest.Bytes: "BLOB", sourcetest.JSON: "JSON",
}

func (myDB) Type(k sourcetest.Kind) string { return myTypes[k] }

func (myDB) TextKeys() map[string]string {
	return map[string]string{
		// The server's default (mysqltest): PAD SPACE, so "a\t" sorts
		// before "a" in the server's own order.
		"utf8mb4_bin":        "VARCHAR(40) COLLATE utf8mb4_bin",
		"utf8mb4_nopad_bin":  "VARCHAR(40) COLLATE utf8mb4_nopad_bin",
		"utf8mb4_unicode_ci": "VARCHAR(40) COLLATE utf8mb4_unicode_ci",
		"utf8mb4_general_ci": "CHAR(40) COLLATE utf8mb4_general_ci",
	}
}

func (myDB) Ident(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }

func (myDB) String(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`, "\x00", `\0`).Replace(s) + "'"
}

func (myDB) Bytes(b []byte) string { return "X'" + hex.EncodeToString(b) + "'" }

// parsedSQL turns the general log on, into mysql.general_log, and reads
// what it has of the statements the server parsed: 'Prepare' has a
// statement's placeholders, 'Query' a plain statement. ('Execute' has the
// bound values written in: it is left out.)
func parsedSQL(ctx context.Context, srv *mysqltest.Server) (func(context.Context) ([]string, error), error) {
	for _, q := range []string{"SET GLOBAL log_output = 'TABLE'", "SET GLOBAL general_log = 1", "TRUNCATE TABLE mysql.general_log"} {
		if err := srv.Exec(ctx, "", q); err != nil {
			return nil, err
		}
	}
	return func(ctx context.Context) ([]string, error) {
		rows, err := srv.Query(ctx, "", "SELECT CONVERT(argument USING utf8mb4) FROM mysql.general_log WHERE command_type IN ('Prepare', 'Query')")
		if err != nil {
			return nil, err
		}
		var parsed []string
		for _, r := range rows {
			if r[0] != nil {
				parsed = append(parsed, *r[0])
			}
		}
		return parsed, srv.Exec(ctx, "", "SET GLOBAL general_log = 0")
	}, nil
}
