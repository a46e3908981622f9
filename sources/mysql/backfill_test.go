package mysql

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// execSQL runs statements on one connection, in a session without strict
// mode so that tests can store zero dates and invalid enums.
func execSQL(t *testing.T, srv *mysqltest.Server, db string, stmts ...string) {
	t.Helper()
	conn, err := client.Connect(srv.Addr(), "root", "", db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range append([]string{"SET SESSION sql_mode = ''"}, stmts...) {
		if _, err := conn.Execute(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func newTestSource(t *testing.T, srv *mysqltest.Server, name, db string, mod ...func(*Config)) *Source {
	t.Helper()
	cfg := Config{Name: name, DSN: srv.DSN(db), HeartbeatPeriod: time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	src, err := New(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { src.Close(context.Background()) })
	return src
}

// testStream runs Stream in the background until the test ends.
type testStream struct {
	changes chan *sources.Change
	done    chan struct{}
	err     error
}

func (s *testStream) Change(ctx context.Context, c *sources.Change) error {
	select {
	case s.changes <- c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *testStream) Commit(context.Context, sources.Commit) error { return nil }

func startStream(t *testing.T, src *Source, from sources.Position) *testStream {
	ctx, cancel := context.WithCancel(context.Background())
	st := &testStream{changes: make(chan *sources.Change, 1000), done: make(chan struct{})}
	go func() {
		defer close(st.done)
		st.err = src.Stream(ctx, from, st)
	}()
	// Registered after the source's Close, so it runs before it: Stream
	// owns the catalog connection until it returns.
	t.Cleanup(func() {
		cancel()
		<-st.done
	})
	return st
}

// next returns the next change that match accepts, skipping others.
func (s *testStream) next(t *testing.T, match func(*sources.Change) bool) *sources.Change {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case c := <-s.changes:
			if match(c) {
				return c
			}
		case <-s.done:
			t.Fatalf("stream ended: %v", s.err)
		case <-timeout:
			t.Fatal("no change from the stream within 30s")
		}
	}
}

func onTable(name string) func(*sources.Change) bool {
	return func(c *sources.Change) bool { return c.Table.Name == name }
}

func jsonString(t *testing.T, v sources.Value) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		t.Fatalf("%s is not a JSON string: %v", v, err)
	}
	return s
}

func TestBackfill(t *testing.T) {
	srv := mysqltest.New(t)
	ctx := testCtx(t)

	// Text keys of a charset other than UTF-8, and binary keys, are read
	// in the order of their bytes too (the conformance suite reads UTF-8
	// text keys of every collation, and integer and decimal keys).
	t.Run("paging", func(t *testing.T) {
		if err := srv.CreateDatabase(ctx, "paging"); err != nil {
			t.Fatal(err)
		}
		latin1 := []string{"a", "A", "b", "B", "Z", "z", "ab", "a b", "a\t", "", "é", "É", "€", "ß", "ss", "zz"}
		ins := "INSERT INTO p_latin1 VALUES "
		for i, name := range latin1 {
			if i > 0 {
				ins += ", "
			}
			ins += fmt.Sprintf("('%s', %d)", strings.ReplaceAll(name, "\t", `\t`), i)
		}
		execSQL(t, srv, "paging",
			"CREATE TABLE p_latin1 (name VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_swedish_ci NOT NULL, n INT NOT NULL, PRIMARY KEY (name, n))",
			ins,
			"CREATE TABLE p_bytes (k VARBINARY(8) NOT NULL PRIMARY KEY)",
			"INSERT INTO p_bytes VALUES (X'00'), (X'0000'), (X'FF'), (X'8001'), ('A'), ('a'), (X'7F'), (X'C3A9'), ('')",
			"CREATE TABLE p_fixed (k BINARY(3) NOT NULL PRIMARY KEY)",
			"INSERT INTO p_fixed VALUES (X'00'), (X'0001'), (X'FF'), ('ab'), ('a'), (X'610001')",
		)
		src := newTestSource(t, srv, "paging1", "paging")

		want := []string{"paging.p_bytes", "paging.p_fixed", "paging.p_latin1"}
		if got := src.Tables(); !slices.Equal(got, want) {
			t.Errorf("Tables() = %v, want %v (the signal table is not a user table)", got, want)
		}
		// Auto-discovery now finds the signal table too: still not listed.
		if got := newTestSource(t, srv, "paging2", "paging").Tables(); !slices.Equal(got, want) {
			t.Errorf("second source: Tables() = %v, want %v", got, want)
		}

		t.Run("p_latin1", func(t *testing.T) {
			_, rows := sourcetest.PageAll(t, ctx, src, "paging.p_latin1", 3)
			var got []string
			for _, r := range rows {
				got = append(got, jsonString(t, r[0]))
			}
			wantNames := slices.Clone(latin1)
			slices.Sort(wantNames) // bytewise in UTF-8
			if !slices.Equal(got, wantNames) {
				t.Errorf("read\n%q\nwant\n%q", got, wantNames)
			}
		})
		for table, want := range map[string][]string{
			"p_bytes": {"", "\x00", "\x00\x00", "A", "a", "\x7f", "\x80\x01", "\xc3\xa9", "\xff"},
			// BINARY(3) pads with zeros; values are written without them, as
			// the binlog has them.
			"p_fixed": {"", "\x00\x01", "a", "a\x00\x01", "ab", "\xff"},
		} {
			t.Run(table, func(t *testing.T) {
				_, rows := sourcetest.PageAll(t, ctx, src, "paging."+table, 3)
				var got []string
				for _, r := range rows {
					b, err := base64.StdEncoding.DecodeString(jsonString(t, r[0]))
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, string(b))
				}
				if !slices.Equal(got, want) {
					t.Errorf("read\n%q\nwant\n%q", got, want)
				}
			})
		}
	})

	// The types database's source captures a table of every type.
	if err := srv.CreateDatabase(ctx, "types"); err != nil {
		t.Fatal(err)
	}
	execSQL(t, srv, "types", `CREATE TABLE many (
		id INT NOT NULL PRIMARY KEY,
		ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED,
		i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED, bo BOOL,
		d DECIMAL(30,10), d0 DECIMAL(10,0), dn DECIMAL(5,2), f FLOAT, db DOUBLE,
		dt DATE, dtm DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6), ts TIMESTAMP NULL, ts6 TIMESTAMP(6) NULL,
		tm TIME, tm2 TIME(2), tm6 TIME(6), yr YEAR,
		e ENUM('a','b','c d'), st SET('x','y','z'), j JSON,
		bl BLOB, bn BINARY(4), vb VARBINARY(10), bt BIT(10), bt64 BIT(64),
		c CHAR(5), vc VARCHAR(20), tx TEXT, l1 VARCHAR(10) CHARACTER SET latin1, g POINT)`,
	)
	src := newTestSource(t, srv, "types1", "types")

	t.Run("values match the stream", func(t *testing.T) {
		from, err := src.Reset(ctx)
		if err != nil {
			t.Fatal(err)
		}
		execSQL(t, srv, "types",
			`INSERT INTO many VALUES (1,
				-128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615, 1,
				'12345678901234567890.0123456789', 1234567890, -0.50, 1.2345678, 1e0/3,
				'2024-02-29', '2024-02-29 13:45:06', '2024-02-29 13:45:06.120', '2024-02-29 13:45:06.000000',
				'2038-01-19 03:14:07', '2024-02-29 13:45:06.123456',
				'-838:59:59', '-00:00:01.10', '12:00:00.000001', 2024,
				'c d', 'x,z', '{"a": [1, 2], "s": "é"}',
				X'00FF10', 'ab', X'0001', b'1010101010', X'FFFFFFFFFFFFFFFF',
				'ab', 'snow ☃ "q"\n', 'long text', 'café €', ST_GeomFromText('POINT(1 2)'))`,
			`INSERT INTO many VALUES (2,
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
				0, 0, 0, -1.5e-30, -2.5e100,
				'0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00.000', '2024-01-01 00:00:00.5',
				'0000-00-00 00:00:00', '1970-01-01 00:00:01.000001',
				'00:00:00', '00:00:00.00', '-00:00:00.5', 0,
				'', '', 'null',
				'', X'00000000', '', b'0', 0,
				'', '', '', '', ST_GeomFromText('POINT(0 0)'))`,
			"INSERT INTO many (id) VALUES (3)",
		)
		st := startStream(t, src, from)
		streamed := map[string]*sources.Change{}
		for len(streamed) < 3 {
			c := st.next(t, onTable("many"))
			streamed[string(c.After[0])] = c
		}
		chunk, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: "types.many", Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(chunk.Rows) != 3 {
			t.Fatalf("read %d rows, want 3", len(chunk.Rows))
		}
		for _, row := range chunk.Rows {
			c := streamed[string(row[0])]
			if c.Table != chunk.Table {
				t.Errorf("the chunk's shape %p (v%d) is not the stream's %p (v%d)", chunk.Table, chunk.Table.Version, c.Table, c.Table.Version)
			}
			for i, col := range chunk.Table.Columns {
				if !bytes.Equal(row[i], c.After[i]) {
					t.Errorf("row %s, column %s: read %s, streamed %s", row[0], col, row[i], c.After[i])
				}
				if !json.Valid(row[i]) {
					t.Errorf("row %s, column %s: %s is not JSON", row[0], col, row[i])
				}
			}
		}
		// A few values pinned, so that both sides being wrong alike shows.
		r := chunk.Rows[0]
		col := func(name string) string { return string(r[slices.Index(chunk.Table.Columns, name)]) }
		for name, want := range map[string]string{
			"biu": "18446744073709551615", "f": "1.2345678", "d": `"12345678901234567890.0123456789"`,
			"dtm3": `"2024-02-29T13:45:06.120Z"`, "tm2": `"-00:00:01.10"`, "bn": `"YWI="`, "bt64": "18446744073709551615",
			"l1": `"café €"`, "st": `"x,z"`, "j": `{"a": [1, 2], "s": "é"}`,
		} {
			if got := col(name); got != want {
				t.Errorf("column %s = %s, want %s", name, got, want)
			}
		}
	})

	t.Run("signal table setup", func(t *testing.T) {
		_, err := New(ctx, Config{Name: "nodb", DSN: srv.DSN("types"), SignalTable: "nosuchdb.sig"})
		if !errors.Is(err, sources.ErrPrerequisite) || !strings.Contains(err.Error(), "nosuchdb") {
			t.Errorf("signal table in a missing database: %v", err)
		}
		execSQL(t, srv, "",
			"CREATE USER 'reader'@'%' IDENTIFIED BY 'pw'",
			"GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'reader'@'%'")
		dsn := strings.Replace(srv.DSN("types"), "root:", "reader:pw", 1)
		_, err = New(ctx, Config{Name: "reader", DSN: dsn, SignalTable: "types.sig2"})
		if !errors.Is(err, sources.ErrPrerequisite) || !strings.Contains(err.Error(), "CREATE TABLE IF NOT EXISTS `types`.`sig2`") {
			t.Errorf("signal table without CREATE: %v", err)
		}
		// Once it exists, the user needs only to write it.
		execSQL(t, srv, "", signalDDL(tableName{"types", "sig2"}), "GRANT INSERT, UPDATE ON types.sig2 TO 'reader'@'%'")
		s2 := newTestSource(t, srv, "reader", "types", func(c *Config) { c.DSN, c.SignalTable = dsn, "types.sig2" })
		if err := s2.WriteSignal(ctx, "low", "x"); err != nil {
			t.Errorf("WriteSignal: %v", err)
		}
	})
}
