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

// pageAll reads a table in chunks of limit rows, each starting at the last
// key of the one before (inclusive), and returns the rows once each.
func pageAll(t *testing.T, src *Source, table string, limit int) (*sources.Table, [][]sources.Value) {
	t.Helper()
	var all [][]sources.Value
	var shape *sources.Table
	var from []sources.Value
	for range 1000 {
		chunk, err := src.ReadChunk(testCtx(t), sources.ChunkQuery{Table: table, From: from, Limit: limit})
		if err != nil {
			t.Fatalf("ReadChunk(%s from %s): %v", table, from, err)
		}
		if shape == nil {
			shape = chunk.Table
		} else if chunk.Table != shape {
			t.Fatalf("shape changed between chunks: %+v then %+v", shape, chunk.Table)
		}
		rows := chunk.Rows
		if from != nil {
			if len(rows) == 0 || !slices.EqualFunc(key(shape, rows[0]), from, func(a, b sources.Value) bool { return bytes.Equal(a, b) }) {
				t.Fatalf("chunk from %s does not start with its boundary row: %s", from, rows)
			}
			rows = rows[1:]
		}
		all = append(all, rows...)
		if len(chunk.Rows) < limit {
			return shape, all
		}
		from = key(shape, chunk.Rows[len(chunk.Rows)-1])
	}
	t.Fatal("paging does not end")
	return nil, nil
}

func key(shape *sources.Table, row []sources.Value) []sources.Value {
	k := make([]sources.Value, len(shape.Key))
	for i, c := range shape.Key {
		k[i] = row[c]
	}
	return k
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

	t.Run("paging", func(t *testing.T) {
		if err := srv.CreateDatabase(ctx, "paging"); err != nil {
			t.Fatal(err)
		}
		type row struct {
			name string
			n    int
		}
		unicode := []row{
			{"a", 1}, {"a", 2}, {"a", 10}, {"a", -5}, {"A", 3}, {"b", 4}, {"B", 5}, {"Z", 6}, {"z", 7},
			{"ab", 8}, {"a b", 9}, {"a\t", 11}, {"", 12}, {"é", 13}, {"É", 14}, {"€", 15}, {"ß", 16},
			{"ss", 17}, {"☃", 18}, {"日本", 19}, {"😀", 20}, {"zz", 21},
		}
		var latin1 []row // what cp1252 can hold
		for _, r := range unicode {
			if !strings.ContainsAny(r.name, "☃日本😀") {
				latin1 = append(latin1, r)
			}
		}
		cases := []struct {
			table, column string
			rows          []row
		}{
			{"p_bin", "VARCHAR(20) NOT NULL", unicode}, // the server's utf8mb4_bin: PAD SPACE
			{"p_ci", "VARCHAR(20) COLLATE utf8mb4_unicode_ci NOT NULL", unicode},
			{"p_nopad", "VARCHAR(20) COLLATE utf8mb4_nopad_bin NOT NULL", unicode},
			{"p_latin1", "VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_swedish_ci NOT NULL", latin1},
		}
		for _, c := range cases {
			stmt := fmt.Sprintf("CREATE TABLE %s (name %s, n INT NOT NULL, v VARCHAR(10), PRIMARY KEY (name, n))", c.table, c.column)
			ins := "INSERT INTO " + c.table + " VALUES "
			for i, r := range c.rows {
				if i > 0 {
					ins += ", "
				}
				ins += fmt.Sprintf("('%s', %d, 'v%d')", strings.ReplaceAll(r.name, "\t", `\t`), r.n, r.n)
			}
			execSQL(t, srv, "paging", stmt, ins)
		}
		execSQL(t, srv, "paging",
			"CREATE TABLE p_num (d DECIMAL(30,10) NOT NULL, u BIGINT UNSIGNED NOT NULL, PRIMARY KEY (d, u))",
			"INSERT INTO p_num VALUES (-1.5, 3), (2, 0), (10, 9), (10, 18446744073709551615), (10.0000000001, 1), (99999999999999999999.1, 2), (-100, 5), (0.25, 7)",
			"CREATE TABLE p_bytes (k VARBINARY(8) NOT NULL PRIMARY KEY)",
			"INSERT INTO p_bytes VALUES (X'00'), (X'0000'), (X'FF'), (X'8001'), ('A'), ('a'), (X'7F'), (X'C3A9'), ('')",
			"CREATE TABLE p_fixed (k BINARY(3) NOT NULL PRIMARY KEY)",
			"INSERT INTO p_fixed VALUES (X'00'), (X'0001'), (X'FF'), ('ab'), ('a'), (X'610001')",
		)
		src := newTestSource(t, srv, "paging1", "paging")

		want := []string{"paging.p_bin", "paging.p_bytes", "paging.p_ci", "paging.p_fixed", "paging.p_latin1", "paging.p_nopad", "paging.p_num"}
		if got := src.Tables(); !slices.Equal(got, want) {
			t.Errorf("Tables() = %v, want %v (the signal table is not a user table)", got, want)
		}
		// Auto-discovery now finds the signal table too: still not listed.
		if got := newTestSource(t, srv, "paging2", "paging").Tables(); !slices.Equal(got, want) {
			t.Errorf("second source: Tables() = %v, want %v", got, want)
		}

		for _, c := range cases {
			t.Run(c.table, func(t *testing.T) {
				shape, rows := pageAll(t, src, "paging."+c.table, 3)
				if !slices.Equal(shape.Columns, []string{"name", "n", "v"}) || !slices.Equal(shape.Key, []int{0, 1}) {
					t.Fatalf("shape %+v", shape)
				}
				expected := slices.Clone(c.rows)
				slices.SortFunc(expected, func(a, b row) int {
					if c := bytes.Compare([]byte(a.name), []byte(b.name)); c != 0 {
						return c
					}
					return a.n - b.n
				})
				var got []row
				for _, r := range rows {
					var n int
					if err := json.Unmarshal(r[1], &n); err != nil {
						t.Fatal(err)
					}
					got = append(got, row{jsonString(t, r[0]), n})
					if v := jsonString(t, r[2]); v != fmt.Sprintf("v%d", n) {
						t.Errorf("row %q %d: v = %q", got[len(got)-1].name, n, v)
					}
				}
				if !slices.Equal(got, expected) {
					t.Errorf("read\n%#v\nwant (bytewise, then numeric)\n%#v", got, expected)
				}
				n, err := src.EstimateRows(ctx, "paging."+c.table)
				if err != nil || n <= 0 {
					t.Errorf("EstimateRows = %d, %v", n, err)
				}
			})
		}

		t.Run("numeric", func(t *testing.T) {
			_, rows := pageAll(t, src, "paging.p_num", 3)
			var got []string
			for _, r := range rows {
				got = append(got, string(r[0])+" "+string(r[1]))
			}
			want := []string{`"-100.0000000000" 5`, `"-1.5000000000" 3`, `"0.2500000000" 7`, `"2.0000000000" 0`, `"10.0000000000" 9`,
				`"10.0000000000" 18446744073709551615`, `"10.0000000001" 1`, `"99999999999999999999.1000000000" 2`}
			if !slices.Equal(got, want) {
				t.Errorf("read\n%q\nwant\n%q", got, want)
			}
		})

		for table, want := range map[string][]string{
			"p_bytes": {"", "\x00", "\x00\x00", "A", "a", "\x7f", "\x80\x01", "\xc3\xa9", "\xff"},
			// BINARY(3) pads with zeros; values are written without them, as
			// the binlog has them.
			"p_fixed": {"", "\x00\x01", "a", "a\x00\x01", "ab", "\xff"},
		} {
			t.Run(table, func(t *testing.T) {
				_, rows := pageAll(t, src, "paging."+table, 3)
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

	// The types database's source captures a table of every type, and a
	// table whose key cannot be read in chunks.
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
		"CREATE TABLE dtk (id INT NOT NULL, at DATETIME NOT NULL, PRIMARY KEY (id, at))",
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

	t.Run("signal", func(t *testing.T) {
		if slices.Contains(src.Tables(), "types.sluice_signal") {
			t.Errorf("Tables() lists the signal table: %v", src.Tables())
		}
		from, err := src.Reset(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st := startStream(t, src, from)
		isSignal := func(c *sources.Change) bool {
			_, ok := src.ReadSignal(c)
			return ok
		}
		for _, kind := range []string{"low", "high"} {
			if err := src.WriteSignal(ctx, kind, "chunk-7"); err != nil {
				t.Fatalf("WriteSignal: %v", err)
			}
			c := st.next(t, isSignal)
			sig, _ := src.ReadSignal(c)
			if want := (sources.Signal{Source: "types1", Kind: kind, ID: "chunk-7"}); sig != want {
				t.Errorf("ReadSignal = %+v, want %+v", sig, want)
			}
			if c.Table.QualifiedName() != "types.sluice_signal" || len(c.Table.Key) != 1 {
				t.Errorf("signal change on %s, key %v", c.Table.QualifiedName(), c.Table.Key)
			}
		}
		execSQL(t, srv, "types", "UPDATE many SET i = 5 WHERE id = 3")
		c := st.next(t, onTable("many"))
		if _, ok := src.ReadSignal(c); ok {
			t.Error("ReadSignal took a change of types.many for a signal")
		}
	})

	t.Run("unsupported key", func(t *testing.T) {
		_, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: "types.dtk", Limit: 10})
		if !errors.Is(err, sources.ErrUnsupportedKey) {
			t.Fatalf("ReadChunk of a DATETIME key: %v, want ErrUnsupportedKey", err)
		}
		for _, part := range []string{"types.dtk", "at", "datetime"} {
			if !strings.Contains(err.Error(), part) {
				t.Errorf("error does not name %q: %v", part, err)
			}
		}
		if _, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: "types.sluice_signal", Limit: 10}); err == nil {
			t.Error("ReadChunk read the signal table")
		}
	})

	t.Run("cancel", func(t *testing.T) {
		// A write lock held elsewhere keeps the chunk's SELECT waiting
		// until its context ends.
		locker, err := client.Connect(srv.Addr(), "root", "", "types")
		if err != nil {
			t.Fatal(err)
		}
		defer locker.Close()
		if _, err := locker.Execute("LOCK TABLES many WRITE"); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = src.ReadChunk(short, sources.ChunkQuery{Table: "types.many", Limit: 10})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 1500*time.Millisecond {
			t.Errorf("ReadChunk past its deadline: %v after %v", err, time.Since(start))
		}
		if _, err := locker.Execute("UNLOCK TABLES"); err != nil {
			t.Fatal(err)
		}
		// The cut connection is replaced.
		chunk, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: "types.many", Limit: 10, Filters: []sources.Filter{{Column: "id", Op: ">", Values: []string{"1"}}}})
		if err != nil || len(chunk.Rows) != 2 {
			t.Errorf("ReadChunk after a cancelled one: %d rows, %v", len(chunk.Rows), err)
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

// A purged binlog is a lost position; Reset gives one to resume from.
func TestResetAfterPurge(t *testing.T) {
	srv := mysqltest.New(t)
	ctx := testCtx(t)
	if err := srv.CreateDatabase(ctx, "gap"); err != nil {
		t.Fatal(err)
	}
	execSQL(t, srv, "gap", "CREATE TABLE t (id INT PRIMARY KEY)")
	for _, positions := range []string{"gtid", "file"} {
		t.Run(positions, func(t *testing.T) {
			src := newTestSource(t, srv, "gap-"+positions, "gap", func(c *Config) { c.Positions = positions })
			old, err := src.Reset(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(old), positions+":") {
				t.Errorf("Reset = %s, want a %s position", old, positions)
			}
			execSQL(t, srv, "gap", "INSERT INTO t VALUES (1)", "FLUSH BINARY LOGS", "INSERT INTO t VALUES (2)")
			if err := srv.PurgeBinlogs(ctx); err != nil {
				t.Fatal(err)
			}
			st := startStream(t, src, old)
			select {
			case <-st.done:
				if !errors.Is(st.err, sources.ErrLogLost) {
					t.Fatalf("Stream from a purged position: %v, want ErrLogLost", st.err)
				}
			case c := <-st.changes:
				t.Fatalf("Stream from a purged position read %s", c.After)
			case <-time.After(30 * time.Second):
				t.Fatal("Stream from a purged position did not fail")
			}

			now, err := src.Reset(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st = startStream(t, src, now)
			execSQL(t, srv, "gap", "INSERT INTO t VALUES (3)")
			if c := st.next(t, onTable("t")); string(c.After[0]) != "3" {
				t.Errorf("after Reset the stream read %s first, want 3", c.After[0])
			}
			execSQL(t, srv, "gap", "DELETE FROM t")
			st.next(t, onTable("t"))
		})
	}
}
