package mysql

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
)

// canary is stored only in a table the source does not capture: no chunk
// or error may ever show it.
const canary = "CANARY-9c2d-never-leaves"

func chunkIDs(t *testing.T, rows [][]sources.Value) []int {
	t.Helper()
	out := []int{}
	for _, r := range rows {
		n, err := strconv.Atoi(string(r[0]))
		if err != nil {
			t.Fatalf("id %s: %v", r[0], err)
		}
		out = append(out, n)
	}
	return out
}

// loggedSQL is what the general log holds of the given commands
// ('Prepare': statements as the server parsed them, placeholders and all;
// 'Execute': the same with the bound values in). The log is a table, so
// it is complete when a statement returns.
func loggedSQL(t *testing.T, srv *mysqltest.Server, commands ...string) []string {
	t.Helper()
	rows, err := srv.Query(testCtx(t), "", "SELECT command_type, CONVERT(argument USING utf8mb4) FROM mysql.general_log")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		if r[0] != nil && r[1] != nil && slices.Contains(commands, *r[0]) {
			out = append(out, *r[1])
		}
	}
	return out
}

// TestBackfillFilters: filters select rows by bound values, never by SQL
// text; columns are checked first, the LIMIT holds, a statement timeout is
// reported as such, and database errors quote no value.
func TestBackfillFilters(t *testing.T) {
	srv := mysqltest.New(t)
	ctx := testCtx(t)
	if err := srv.CreateDatabase(ctx, "filters"); err != nil {
		t.Fatal(err)
	}
	ins := "INSERT INTO people VALUES "
	for i := 1; i <= 30; i++ {
		region := fmt.Sprintf("'r%d'", i%3)
		if i%3 == 0 {
			region = "NULL"
		}
		ins += fmt.Sprintf("(%d, 'n%d', %s, %d * 1.5, '2000-01-01' + INTERVAL %d DAY, '2000-01-01 10:00:00' + INTERVAL %d SECOND, %d, %d, %d / 4), ",
			i, i, region, i, i, i, uint64(1)<<63+uint64(i), i, i)
	}
	ins += `(100, ''' OR 1=1 --', 'lit', 0, NULL, NULL, 0, NULL, 0), (101, 'it''s "q" \\back\\slash ` + "`b`" + `', 'lit', 0, NULL, NULL, 0, NULL, 0)`
	execSQL(t, srv, "filters",
		`CREATE TABLE people (id INT NOT NULL PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
			region VARCHAR(20), score DECIMAL(10,2), born DATE, at DATETIME(6), big BIGINT UNSIGNED NOT NULL, Mixed INT, f DOUBLE)`,
		ins,
		"CREATE TABLE secrets (id INT NOT NULL PRIMARY KEY, secret VARCHAR(100) NOT NULL)",
		"INSERT INTO secrets VALUES (1, '"+canary+"')",
		"CREATE TABLE big (id INT NOT NULL PRIMARY KEY, v INT NOT NULL)",
		"INSERT INTO big SELECT seq, seq FROM seq_1_to_300000",
	)
	execSQL(t, srv, "", "SET GLOBAL log_output = 'TABLE'", "SET GLOBAL general_log = 1")
	src := newTestSource(t, srv, "filters", "filters", func(c *Config) { c.Tables = []string{"filters.people", "filters.big"} })
	read := func(t *testing.T, q sources.ChunkQuery) ([][]sources.Value, error) {
		t.Helper()
		if q.Table == "" {
			q.Table = "filters.people"
		}
		if q.Limit == 0 {
			q.Limit = 1000
		}
		ch, err := src.ReadChunk(ctx, q)
		for _, r := range ch.Rows {
			for _, v := range r {
				if strings.Contains(string(v), "CANARY") {
					t.Fatalf("%v: a row carries the uncaptured table's canary: %s", q.Filters, v)
				}
			}
		}
		if err != nil && strings.Contains(err.Error(), "CANARY") {
			t.Fatalf("%v: the error carries the canary: %v", q.Filters, err)
		}
		return ch.Rows, err
	}
	f := func(col, op string, vals ...string) sources.Filter {
		return sources.Filter{Column: col, Op: op, Values: vals}
	}

	t.Run("columns", func(t *testing.T) {
		cols, err := src.Columns(ctx, "filters.people")
		if want := []string{"id", "name", "region", "score", "born", "at", "big", "Mixed", "f"}; err != nil || !slices.Equal(cols, want) {
			t.Errorf("Columns = %q, %v; want %q", cols, err, want)
		}
		for _, table := range []string{"filters.secrets", "filters.sluice_signal", "people", "filters.nosuch"} {
			if cols, err := src.Columns(ctx, table); err == nil || !strings.Contains(err.Error(), table) {
				t.Errorf("Columns(%s) = %q, %v; want an error naming the table", table, cols, err)
			}
		}
		if _, err := read(t, sources.ChunkQuery{Table: "filters.secrets"}); err == nil {
			t.Error("ReadChunk read an uncaptured table")
		}
	})

	t.Run("column names", func(t *testing.T) {
		execSQL(t, srv, "", "TRUNCATE TABLE mysql.general_log")
		injections := []string{
			"id) UNION SELECT secret FROM secrets --",
			"id; DROP TABLE people",
			"id` = 1 OR `id",
			"name' OR '1'='1",
			`"id"`,
		}
		for _, col := range append(slices.Clone(injections), "`id`", "ID", "Name", "mixed", "", "id\x00") {
			rows, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f(col, "=", "1")}})
			if !errors.Is(err, sources.ErrBadFilter) || !strings.Contains(err.Error(), strconv.Quote(col)) {
				t.Errorf("filter on column %q: %d rows, %v; want ErrBadFilter naming it", col, len(rows), err)
			}
		}
		_, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f("mixed", "=", "1")}})
		if err == nil || !strings.Contains(err.Error(), "did you mean Mixed") {
			t.Errorf("case-mismatched column: %v, want a hint naming Mixed", err)
		}
		for _, op := range []string{"= 1 OR 1=1 --", "LIKE", "==", "IN", "; DROP TABLE people"} {
			if _, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f("id", op, "1")}}); !errors.Is(err, sources.ErrBadFilter) {
				t.Errorf("operator %q: %v, want ErrBadFilter", op, err)
			}
		}
		// Not one statement the server ran carries those names.
		for _, sql := range loggedSQL(t, srv, "Prepare", "Execute", "Query") {
			for _, col := range injections {
				if strings.Contains(sql, col) {
					t.Errorf("column name %q reached the server: %s", col, sql)
				}
			}
		}
		if rows, err := read(t, sources.ChunkQuery{}); err != nil || len(rows) != 32 {
			t.Fatalf("people after the refused filters: %d rows, %v", len(rows), err)
		}
	})

	payloads := []string{
		"' OR 1=1 --",
		"' OR '1'='1",
		"0) UNION ALL SELECT id, secret, secret, 0, NULL, NULL, 0, 0, 0 FROM secrets -- ",
		"n1' UNION ALL SELECT id, secret, secret, 0, NULL, NULL, 0, 0, 0 FROM secrets -- ",
		"1; DROP TABLE people",
		"SLEEP(5)",
		"' OR SLEEP(5) OR '",
		`\' OR 1=1 -- `,
		`it's "q" \back\slash ` + "`b`",
		"?",
		"n1\x00",
		"1 OR 1",
		"1abc",
	}
	t.Run("values are bound", func(t *testing.T) {
		start := time.Now()
		for _, p := range payloads {
			want := []int{}
			switch p {
			case "' OR 1=1 --":
				want = []int{100}
			case `it's "q" \back\slash ` + "`b`":
				want = []int{101}
			}
			rows, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f("name", "=", p)}})
			if err != nil || !slices.Equal(chunkIDs(t, rows), want) {
				t.Errorf("name = %q: ids %v, %v; want %v", p, chunkIDs(t, rows), err, want)
			}
			rows, err = read(t, sources.ChunkQuery{Filters: []sources.Filter{f("name", "in", p, "n2")}})
			if want = append(want, 2); err != nil || !slices.Equal(chunkIDs(t, rows), slices.Sorted(slices.Values(want))) {
				t.Errorf("name in (%q, n2): ids %v, %v; want %v", p, chunkIDs(t, rows), err, want)
			}
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("the payloads took %v: did SLEEP run?", d)
		}
		for _, p := range payloads[:5] {
			rows, err := read(t, sources.ChunkQuery{Limit: 5, Filters: []sources.Filter{f("name", "<>", p)}})
			if err != nil || len(rows) != 5 {
				t.Errorf("name <> %q with limit 5: %d rows, %v", p, len(rows), err)
			}
		}
		// MySQL would compare '1abc' with an integer as 1, and a date with
		// junk after it as the date: such values are refused, unquoted.
		for _, col := range []string{"id", "big", "score", "born", "at", "f", "Mixed"} {
			for _, p := range append(slices.Clone(payloads), canary) {
				if p == "?" {
					continue
				}
				rows, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f(col, "=", p)}})
				if !errors.Is(err, sources.ErrBadFilter) || !strings.Contains(err.Error(), col) {
					t.Errorf("%s = %q: ids %v, %v; want ErrBadFilter naming the column", col, p, chunkIDs(t, rows), err)
					continue
				}
				if strings.Contains(err.Error(), p) {
					t.Errorf("%s = %q: the error quotes the value: %v", col, p, err)
				}
			}
		}
		if rows, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f("id", "=", "7")}}); err != nil || !slices.Equal(chunkIDs(t, rows), []int{7}) {
			t.Errorf("after the refusals: %v, %v", chunkIDs(t, rows), err)
		}
		// The values were bound: no statement the server parsed has them.
		prepared := loggedSQL(t, srv, "Prepare")
		if !slices.ContainsFunc(prepared, func(sql string) bool { return strings.Contains(sql, "WHERE (`name` = ?)") }) {
			t.Fatalf("the general log has no filtered chunk statement: %q", prepared)
		}
		for _, sql := range prepared {
			for _, p := range payloads {
				if p != "?" && strings.Contains(sql, p) {
					t.Errorf("filter value %q is in a statement the server parsed: %s", p, sql)
				}
			}
		}
	})

	t.Run("operators", func(t *testing.T) {
		nulls := []int{}
		for i := 3; i <= 30; i += 3 {
			nulls = append(nulls, i)
		}
		cases := []struct {
			filters []sources.Filter
			from    []sources.Value
			want    []int
		}{
			{[]sources.Filter{f("id", "=", "5")}, nil, []int{5}},
			{[]sources.Filter{f("id", "in", "1", "2", "3", "99")}, nil, []int{1, 2, 3}},
			{[]sources.Filter{f("id", "<", "4")}, nil, []int{1, 2, 3}},
			{[]sources.Filter{f("id", "<=", "3")}, nil, []int{1, 2, 3}},
			{[]sources.Filter{f("id", ">", "29")}, nil, []int{30, 100, 101}},
			{[]sources.Filter{f("id", ">=", "30"), f("id", "<>", "100")}, nil, []int{30, 101}},
			{[]sources.Filter{f("region", "is null")}, nil, nulls},
			{[]sources.Filter{f("region", "is not null"), f("id", "<", "5")}, nil, []int{1, 2, 4}},
			{[]sources.Filter{f("region", "is null")}, []sources.Value{sources.Value("10")}, nulls[3:]},
			{[]sources.Filter{f("region", "=", "r1"), f("id", "in", "1", "4", "5")}, []sources.Value{sources.Value("2")}, []int{4}},
			{[]sources.Filter{f("score", ">=", "43.5")}, nil, []int{29, 30}},
			{[]sources.Filter{f("score", "=", "43.50000")}, nil, []int{29}},
			{[]sources.Filter{f("score", "=", "43.501")}, nil, []int{}},
			{[]sources.Filter{f("born", "<=", "2000-01-03")}, nil, []int{1, 2}},
			{[]sources.Filter{f("at", "=", "2000-01-01T10:00:07Z")}, nil, []int{7}},
			{[]sources.Filter{f("at", "in", "2000-01-01 10:00:08", "2000-01-01 10:00:09.000000")}, nil, []int{8, 9}},
			// A bigint past 2^53 compares exactly, not as a double.
			{[]sources.Filter{f("big", "=", strconv.FormatUint(1<<63+3, 10))}, nil, []int{3}},
			{[]sources.Filter{f("f", "=", "1.25")}, nil, []int{5}},
			{[]sources.Filter{f("Mixed", "=", "9")}, nil, []int{9}},
			{[]sources.Filter{f("name", "<", "n11"), f("id", "<", "50")}, nil, []int{1, 10}},
		}
		for _, c := range cases {
			rows, err := read(t, sources.ChunkQuery{Filters: c.filters, From: c.from})
			if err != nil || !slices.Equal(chunkIDs(t, rows), c.want) {
				t.Errorf("%v from %s: ids %v, %v; want %v", c.filters, c.from, chunkIDs(t, rows), err, c.want)
			}
		}
		var got []int
		var from []sources.Value
		for {
			rows, err := read(t, sources.ChunkQuery{Limit: 4, From: from, Filters: []sources.Filter{f("region", "is null")}})
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) > 4 {
				t.Fatalf("a chunk of 4 has %d rows", len(rows))
			}
			page := chunkIDs(t, rows)
			if from != nil {
				page = page[1:]
			}
			got = append(got, page...)
			if len(rows) < 4 {
				break
			}
			from = []sources.Value{rows[len(rows)-1][0]}
		}
		if !slices.Equal(got, nulls) {
			t.Errorf("paged with a filter: %v, want %v", got, nulls)
		}
	})

	t.Run("statement timeout", func(t *testing.T) {
		// A full scan of a big table cannot finish within a millisecond.
		_, err := read(t, sources.ChunkQuery{Table: "filters.big", Limit: 10, Timeout: time.Millisecond, Filters: []sources.Filter{f("v", "=", "-1")}})
		var dbErr *sources.DBError
		var myErr *mysql.MyError
		if !errors.Is(err, sources.ErrStatementTimeout) || !errors.As(err, &dbErr) || dbErr.Code != erStatementTimeout || !errors.As(err, &myErr) {
			t.Fatalf("a full scan with a 1ms timeout: %v, want ErrStatementTimeout", err)
		}
		if !strings.Contains(err.Error(), "backfill.statement_timeout") || errors.Is(err, sources.ErrDisconnected) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the timeout error %q must name backfill.statement_timeout and not look transient", err)
		}
		if strings.Contains(err.Error(), myErr.Message) {
			t.Errorf("the timeout error %q quotes the server's message", err)
		}
		// The limit was the statement's alone, and the transaction ended.
		if rows, err := read(t, sources.ChunkQuery{Table: "filters.big", Limit: 10, Filters: []sources.Filter{f("v", "=", "-1")}}); err != nil || len(rows) != 0 {
			t.Errorf("the same scan without a timeout: %d rows, %v", len(rows), err)
		}
		if rows, err := read(t, sources.ChunkQuery{Table: "filters.big", Limit: 3, Timeout: time.Minute, Filters: []sources.Filter{f("v", ">", "299998")}}); err != nil || !slices.Equal(chunkIDs(t, rows), []int{299999, 300000}) {
			t.Errorf("with a generous timeout: %v, %v", chunkIDs(t, rows), err)
		}

		// A write lock held elsewhere keeps the SELECT waiting past its
		// limit however fast the machine is.
		locker, err := client.Connect(srv.Addr(), "root", "", "filters")
		if err != nil {
			t.Fatal(err)
		}
		defer locker.Close()
		if _, err := locker.Execute("LOCK TABLES people WRITE"); err != nil {
			t.Fatal(err)
		}
		_, err = read(t, sources.ChunkQuery{Timeout: 100 * time.Millisecond, Filters: []sources.Filter{f("name", "=", canary)}})
		if _, uerr := locker.Execute("UNLOCK TABLES"); uerr != nil {
			t.Fatal(uerr)
		}
		if !errors.Is(err, sources.ErrStatementTimeout) {
			t.Fatalf("ReadChunk behind a lock with a timeout: %v, want ErrStatementTimeout", err)
		}
	})
}

// The reduced error keeps the classification and the original error, and
// loses the server's message.
func TestValueFree(t *testing.T) {
	myErr := &mysql.MyError{Code: mysql.ER_TRUNCATED_WRONG_VALUE, State: "22007", Message: "Truncated incorrect DOUBLE value: '" + canary + "'"}
	err := valueFree(classify(fmt.Errorf("read a chunk of db.t: %w", myErr)))
	var dbErr *sources.DBError
	var back *mysql.MyError
	if strings.Contains(err.Error(), "CANARY") || !errors.As(err, &dbErr) || !errors.As(err, &back) || back != myErr {
		t.Fatalf("valueFree = %q", err)
	}
	if want := "read a chunk of db.t: invalid value for the column's type (MySQL error 1292, SQLSTATE 22007)"; err.Error() != want {
		t.Errorf("valueFree = %q, want %q", err, want)
	}
	gone := &mysql.MyError{Code: mysql.ER_SERVER_SHUTDOWN, State: "08S01", Message: "Server shutdown in progress"}
	err = valueFree(classify(fmt.Errorf("read: %w", gone)))
	if !errors.Is(err, sources.ErrDisconnected) || strings.Contains(err.Error(), "in progress") {
		t.Errorf("a shutdown: %q, want ErrDisconnected without the message", err)
	}
	for code, want := range map[uint16]string{1142: "permission denied", 1143: "permission denied", 3024: "statement timeout", 1969: "statement timeout", 1054: "unknown column", 1366: "invalid value", 9999: "MySQL error"} {
		if got := dbError(&mysql.MyError{Code: code}).Desc; !strings.HasPrefix(got, want) {
			t.Errorf("error %d: %q, want %q", code, got, want)
		}
	}
}

// How a timeout is said to each flavor: a number of ours, never zero.
func TestTimeoutSQL(t *testing.T) {
	tbl := &tableSchema{db: "d", name: "t", columns: []column{{name: "id", dataType: "int"}}, key: []string{"id"}}
	for _, c := range []struct {
		flavor  string
		timeout time.Duration
		prefix  string
	}{
		{mysql.MariaDBFlavor, 0, "SELECT `id`"},
		{mysql.MySQLFlavor, 0, "SELECT `id`"},
		{mysql.MariaDBFlavor, 1500 * time.Millisecond, "SET STATEMENT max_statement_time=1.500000 FOR SELECT `id`"},
		{mysql.MariaDBFlavor, time.Nanosecond, "SET STATEMENT max_statement_time=0.000001 FOR SELECT `id`"},
		{mysql.MySQLFlavor, 1500 * time.Millisecond, "SELECT /*+ MAX_EXECUTION_TIME(1500) */ `id`"},
		{mysql.MySQLFlavor, time.Microsecond, "SELECT /*+ MAX_EXECUTION_TIME(1) */ `id`"},
		{mysql.MySQLFlavor, 1000 * time.Hour, "SELECT /*+ MAX_EXECUTION_TIME(3600000000) */ `id`"},
	} {
		sql, _, err := chunkSQL(tbl, sources.ChunkQuery{Table: "d.t", Limit: 5, Timeout: c.timeout}, c.flavor)
		if err != nil || !strings.HasPrefix(sql, c.prefix) || !strings.HasSuffix(sql, " LIMIT 5") {
			t.Errorf("%s, %v: %q, %v; want it to start with %q", c.flavor, c.timeout, sql, err, c.prefix)
		}
	}
}

// Values MySQL would convert leniently are checked before they are bound.
func TestFilterParam(t *testing.T) {
	tbl := &tableSchema{db: "d", name: "t"}
	for _, c := range []struct {
		col     column
		in      string
		ph      string
		arg     any
		refused bool
	}{
		{column{name: "i", dataType: "int"}, "-5", "?", int64(-5), false},
		{column{name: "u", dataType: "bigint", unsigned: true}, "18446744073709551615", "?", uint64(18446744073709551615), false},
		{column{name: "i", dataType: "int"}, "1e3", "", nil, true},
		{column{name: "i", dataType: "int"}, " 1", "", nil, true},
		{column{name: "f", dataType: "double"}, "NaN", "", nil, true},
		{column{name: "f", dataType: "float"}, "-2.5e3", "?", -2500.0, false},
		{column{name: "d", dataType: "decimal"}, "+0012.3400", "CAST(? AS DECIMAL(4,2))", "0012.3400", false},
		{column{name: "d", dataType: "decimal"}, "0", "CAST(? AS DECIMAL(1,0))", "0", false},
		{column{name: "d", dataType: "decimal"}, "1." + strings.Repeat("1", 31), "", nil, true},
		{column{name: "d", dataType: "decimal"}, "1e5", "", nil, true},
		{column{name: "dt", dataType: "date"}, "2024-02-29", "?", "2024-02-29", false},
		{column{name: "dt", dataType: "date"}, "0000-00-00", "?", "0000-00-00", false},
		{column{name: "dt", dataType: "date"}, "2023-02-29", "", nil, true},
		{column{name: "dt", dataType: "date"}, "2024-01-01 junk", "", nil, true},
		{column{name: "ts", dataType: "timestamp"}, "2024-01-01T10:00:00.5Z", "?", "2024-01-01 10:00:00.5", false},
		{column{name: "ts", dataType: "datetime"}, "2024-01-01", "?", "2024-01-01", false},
		{column{name: "ts", dataType: "datetime"}, "2024-01-01 24:00:00", "", nil, true},
		{column{name: "tm", dataType: "time"}, "-838:59:59.000001", "?", "-838:59:59.000001", false},
		{column{name: "tm", dataType: "time"}, "839:00:00", "", nil, true},
		{column{name: "s", dataType: "varchar"}, "' OR 1=1 --", "?", "' OR 1=1 --", false},
	} {
		ph, arg, err := filterParam(tbl, c.col, c.in)
		if c.refused {
			if !errors.Is(err, sources.ErrBadFilter) || strings.Contains(err.Error(), c.in) || !strings.Contains(err.Error(), c.col.name) {
				t.Errorf("%s %q: %v, want ErrBadFilter naming the column, not the value", c.col.dataType, c.in, err)
			}
			continue
		}
		if err != nil || ph != c.ph || arg != c.arg {
			t.Errorf("%s %q: %q, %#v, %v; want %q, %#v", c.col.dataType, c.in, ph, arg, err, c.ph, c.arg)
		}
	}
}
