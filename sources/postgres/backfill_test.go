package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// canary is stored only in a table the source does not capture: no chunk
// or error may ever show it.
const canary = "CANARY-5e1f-never-leaves"

// syncBuffer collects the server's log while the server writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// ids returns the id column (the first) of rows.
func ids(t *testing.T, rows [][]sources.Value) []int {
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

func assertNoCanary(t *testing.T, what string, rows [][]sources.Value, err error) {
	t.Helper()
	for _, r := range rows {
		for _, v := range r {
			if strings.Contains(string(v), canary) || strings.Contains(string(v), "CANARY") {
				t.Fatalf("%s: a row carries the uncaptured table's canary: %s", what, v)
			}
		}
	}
	if err != nil && strings.Contains(err.Error(), "CANARY") {
		t.Fatalf("%s: the error carries the canary: %v", what, err)
	}
}

// TestBackfillFilters: filters select rows by bound values, never by SQL
// text; columns are checked first, the LIMIT holds, a statement timeout is
// reported as such, and database errors quote no value.
func TestBackfillFilters(t *testing.T) {
	var serverLog syncBuffer
	srv := pgtest.New(t, pgtest.Options{Settings: map[string]string{"log_statement": "all"}, Log: &serverLog})
	ctx := testCtx(t)
	if err := srv.CreateDatabase(ctx, "filters"); err != nil {
		t.Fatal(err)
	}
	err := srv.Exec(ctx, "filters", `
		CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, region text, score numeric(10,2), born date, "Mixed" int);
		INSERT INTO people SELECT i, 'n' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'r' || (i % 3) END, i * 1.5, date '2000-01-01' + i, i
			FROM generate_series(1, 30) i;
		INSERT INTO people VALUES (100, ''' OR 1=1 --', 'lit', 0, NULL, NULL),
			(101, E'it''s "q" \\back\\slash', 'lit', 0, NULL, NULL);
		CREATE TABLE secrets (id int PRIMARY KEY, secret text NOT NULL);
		INSERT INTO secrets VALUES (1, '`+canary+`');
		CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL);
		INSERT INTO big SELECT i, i FROM generate_series(1, 300000) i;
		ANALYZE big;`)
	if err != nil {
		t.Fatal(err)
	}
	logFrom := waitLogged(t, ctx, srv, &serverLog)
	src, err := New(ctx, Config{Name: "filters", DSN: srv.DSN("filters"), Tables: []string{"public.people", "public.big"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close(context.Background()) })
	read := func(t *testing.T, q sources.ChunkQuery) ([][]sources.Value, error) {
		t.Helper()
		if q.Table == "" {
			q.Table = "public.people"
		}
		if q.Limit == 0 {
			q.Limit = 1000
		}
		ch, err := src.ReadChunk(ctx, q)
		assertNoCanary(t, fmt.Sprint(q.Filters), ch.Rows, err)
		return ch.Rows, err
	}
	f := func(col, op string, vals ...string) sources.Filter {
		return sources.Filter{Column: col, Op: op, Values: vals}
	}

	t.Run("columns", func(t *testing.T) {
		cols, err := src.Columns(ctx, "public.people")
		if want := []string{"id", "name", "region", "score", "born", "Mixed"}; err != nil || !slices.Equal(cols, want) {
			t.Errorf("Columns = %q, %v; want %q", cols, err, want)
		}
		for _, table := range []string{"public.secrets", "public.sluice_signal", "people", "public.nosuch"} {
			if cols, err := src.Columns(ctx, table); err == nil || !strings.Contains(err.Error(), table) {
				t.Errorf("Columns(%s) = %q, %v; want an error naming the table", table, cols, err)
			}
		}
		if _, err := read(t, sources.ChunkQuery{Table: "public.secrets"}); err == nil {
			t.Error("ReadChunk read an uncaptured table")
		}
	})

	// Names that are not exactly a column are refused before any SQL.
	badColumns := []string{
		"id) UNION SELECT secret::int FROM secrets --",
		"id; DROP TABLE people",
		`id" = 1 OR "id`,
		"name' OR '1'='1",
		"`id`",
		"ID", "Name", "mixed",
		"",
		"id\x00",
	}
	t.Run("column names", func(t *testing.T) {
		for _, col := range badColumns {
			rows, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f(col, "=", "1")}})
			if !errors.Is(err, sources.ErrBadFilter) || !strings.Contains(err.Error(), strconv.Quote(col)) {
				t.Errorf("filter on column %q: %d rows, %v; want ErrBadFilter naming it", col, len(rows), err)
			}
			var dbErr *sources.DBError
			if errors.As(err, &dbErr) {
				t.Errorf("filter on column %q reached the database: %v", col, err)
			}
		}
		_, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f("mixed", "=", "1")}})
		if err == nil || !strings.Contains(err.Error(), "did you mean Mixed") {
			t.Errorf("case-mismatched column: %v, want a hint naming Mixed", err)
		}
		for _, op := range []string{"= 1 OR 1=1 --", "LIKE", "==", "IN", "; DROP TABLE people"} {
			_, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f("id", op, "1")}})
			if !errors.Is(err, sources.ErrBadFilter) {
				t.Errorf("operator %q: %v, want ErrBadFilter", op, err)
			}
		}
		// Nothing was dropped.
		if rows, err := read(t, sources.ChunkQuery{}); err != nil || len(rows) != 32 {
			t.Fatalf("people after the refused filters: %d rows, %v", len(rows), err)
		}
	})

	payloads := []string{
		"' OR 1=1 --",
		"' OR '1'='1",
		"0) UNION ALL SELECT id, secret, secret, 0, NULL, 0 FROM secrets --",
		"n1' UNION ALL SELECT id, secret, secret, 0, NULL, 0 FROM secrets --",
		"1; DROP TABLE people",
		"pg_sleep(5)",
		"'||pg_sleep(5)||'",
		`\' OR 1=1 --`,
		`it's "q" \back\slash`,
		"$1",
		"n1\x00",
	}
	t.Run("values are bound", func(t *testing.T) {
		start := time.Now()
		for _, p := range payloads {
			rows, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f("name", "=", p)}})
			want := []int{}
			switch p {
			case "' OR 1=1 --":
				want = []int{100}
			case `it's "q" \back\slash`:
				want = []int{101}
			}
			if p == "n1\x00" {
				// PostgreSQL text holds no NUL: a database error, valueless.
				var dbErr *sources.DBError
				if !errors.As(err, &dbErr) || strings.Contains(err.Error(), "n1") {
					t.Errorf("name = %q: %v, want a DBError without the value", p, err)
				}
				continue
			}
			if err != nil || !slices.Equal(ids(t, rows), want) {
				t.Errorf("name = %q: ids %v, %v; want %v", p, ids(t, rows), err, want)
			}
			rows, err = read(t, sources.ChunkQuery{Filters: []sources.Filter{f("name", "in", p, "n2")}})
			if want = append(want, 2); err != nil || !slices.Equal(ids(t, rows), slices.Sorted(slices.Values(want))) {
				t.Errorf("name in (%q, n2): ids %v, %v; want %v", p, ids(t, rows), err, want)
			}
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("the payloads took %v: did pg_sleep run?", d)
		}
		// The LIMIT holds whatever the filter.
		for _, p := range payloads[:5] {
			rows, err := read(t, sources.ChunkQuery{Limit: 5, Filters: []sources.Filter{f("name", "<>", p)}})
			if err != nil || len(rows) != 5 {
				t.Errorf("name <> %q with limit 5: %d rows, %v", p, len(rows), err)
			}
		}
		// On an integer column the server refuses the text: a DBError that
		// quotes no value, with the PgError still reachable.
		for _, p := range append(payloads[:7], canary) {
			_, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f("id", "=", p)}})
			var dbErr *sources.DBError
			var pgErr *pgconn.PgError
			if !errors.As(err, &dbErr) || dbErr.State != "22P02" || !errors.As(err, &pgErr) {
				t.Errorf("id = %q: %v, want a DBError of SQLSTATE 22P02", p, err)
				continue
			}
			if strings.Contains(err.Error(), p) || strings.Contains(dbErr.Error(), p) {
				t.Errorf("id = %q: the error quotes the value: %v", p, err)
			}
			if !strings.Contains(err.Error(), "invalid input for the column's type") || !strings.Contains(err.Error(), "public.people") {
				t.Errorf("id = %q: error %q does not say what and where", p, err)
			}
			if errors.Is(err, sources.ErrDisconnected) {
				t.Errorf("id = %q: a value error counts as a disconnect: %v", p, err)
			}
		}
		if _, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f("born", "<", "2000-13-45 "+canary)}}); err == nil || strings.Contains(err.Error(), "2000-13") {
			t.Errorf("born < an invalid date: %v, want a DBError without the value", err)
		}
		// The connection is fine after those errors.
		if rows, err := read(t, sources.ChunkQuery{Filters: []sources.Filter{f("id", "=", "7")}}); err != nil || !slices.Equal(ids(t, rows), []int{7}) {
			t.Errorf("after the errors: %v, %v", ids(t, rows), err)
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
			{[]sources.Filter{f("born", "<=", "2000-01-03")}, nil, []int{1, 2}},
			{[]sources.Filter{f("Mixed", "=", "9")}, nil, []int{9}},
			{[]sources.Filter{f("name", "<", "n11"), f("id", "<", "50")}, nil, []int{1, 10}},
		}
		for _, c := range cases {
			rows, err := read(t, sources.ChunkQuery{Filters: c.filters, From: c.from})
			if err != nil || !slices.Equal(ids(t, rows), c.want) {
				t.Errorf("%v from %s: ids %v, %v; want %v", c.filters, c.from, ids(t, rows), err, c.want)
			}
		}
		// A whole table in chunks of 4, with a filter: each chunk at most 4.
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
			page := ids(t, rows)
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
		// A lock held elsewhere makes the SELECT wait: it cannot finish
		// within its timeout, however fast the machine.
		locker, err := pgx.Connect(ctx, srv.DSN("filters"))
		if err != nil {
			t.Fatal(err)
		}
		defer locker.Close(context.Background())
		if _, err := locker.Exec(ctx, "BEGIN; LOCK TABLE people IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		_, err = read(t, sources.ChunkQuery{Timeout: 50 * time.Millisecond, Filters: []sources.Filter{f("name", "=", canary)}})
		var dbErr *sources.DBError
		if !errors.Is(err, sources.ErrStatementTimeout) || !errors.As(err, &dbErr) || dbErr.State != "57014" {
			t.Fatalf("ReadChunk behind a lock with a timeout: %v, want ErrStatementTimeout", err)
		}
		if !strings.Contains(err.Error(), "backfill.statement_timeout") || errors.Is(err, sources.ErrDisconnected) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the timeout error %q must name backfill.statement_timeout and not look transient", err)
		}
		if _, err := locker.Exec(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}

		// A full scan of a big table cannot finish within a millisecond.
		_, err = read(t, sources.ChunkQuery{Table: "public.big", Limit: 10, Timeout: time.Millisecond, Filters: []sources.Filter{f("v", "=", "-1")}})
		if !errors.Is(err, sources.ErrStatementTimeout) {
			t.Fatalf("a full scan with a 1ms timeout: %v, want ErrStatementTimeout", err)
		}
		// The timeout was the chunk's alone: the same read without one
		// completes on the same connection.
		if rows, err := read(t, sources.ChunkQuery{Table: "public.big", Limit: 10, Filters: []sources.Filter{f("v", "=", "-1")}}); err != nil || len(rows) != 0 {
			t.Errorf("the same scan without a timeout: %d rows, %v", len(rows), err)
		}
		if rows, err := read(t, sources.ChunkQuery{Table: "public.big", Limit: 3, Timeout: time.Minute, Filters: []sources.Filter{f("v", ">", "299998")}}); err != nil || !slices.Equal(ids(t, rows), []int{299999, 300000}) {
			t.Errorf("with a generous timeout: %v, %v", ids(t, rows), err)
		}
	})

	t.Run("no filter text in SQL", func(t *testing.T) {
		logTo := waitLogged(t, ctx, srv, &serverLog)
		sawParams := false
		for _, line := range strings.Split(serverLog.String()[logFrom:logTo], "\n") {
			if strings.Contains(line, "parameters:") {
				sawParams = sawParams || strings.Contains(line, "pg_sleep(5)")
				continue // bound values, as the server logs them
			}
			if !strings.Contains(line, "statement:") && !strings.Contains(line, "execute") && !strings.Contains(line, "STATEMENT:") {
				continue
			}
			for _, p := range append(slices.Clone(payloads[:8]), badColumns[:5]...) {
				if strings.Contains(line, p) {
					t.Errorf("filter text %q is in a statement the server ran: %s", p, line)
				}
			}
		}
		if !sawParams {
			t.Error("the server log shows no bound filter value: is log_statement on?")
		}
	})
}

// waitLogged waits until the server has logged everything run so far, and
// returns how long its log is then.
func waitLogged(t *testing.T, ctx context.Context, srv *pgtest.Server, log *syncBuffer) int {
	t.Helper()
	marker := "log-marker-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := srv.Exec(ctx, "filters", "SELECT '"+marker+"'"); err != nil {
		t.Fatal(err)
	}
	for {
		if i := strings.Index(log.String(), marker); i >= 0 {
			return i
		}
		select {
		case <-ctx.Done():
			t.Fatal("the server never logged the marker")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Decode errors name the type and length, never the value.
func TestDecodeErrorsQuoteNoValue(t *testing.T) {
	for _, c := range []struct {
		oid uint32
		in  string
	}{
		{23, "12" + canary}, {16, canary}, {17, `\x` + canary}, {1082, canary}, {1114, "2024-01-01 " + canary},
		{1007, "{1,2," + canary + "}"}, {1007, "{1}" + canary},
	} {
		dec, err := newDecoder(c.oid, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = dec(nil, []byte(c.in))
		if err == nil || strings.Contains(err.Error(), "CANARY") || !strings.Contains(err.Error(), " bytes)") {
			t.Errorf("decoding %q (oid %d): %v", c.in, c.oid, err)
		}
	}
}

// The reduced error keeps the classification and the original error, and
// loses the server's message.
func TestValueFree(t *testing.T) {
	pgErr := &pgconn.PgError{Severity: "ERROR", Code: "22P02", Message: `invalid input syntax for type integer: "` + canary + `"`}
	err := valueFree(classify(fmt.Errorf("read a chunk of public.t: %w", pgErr)))
	var dbErr *sources.DBError
	var back *pgconn.PgError
	if strings.Contains(err.Error(), "CANARY") || !errors.As(err, &dbErr) || !errors.As(err, &back) || back != pgErr {
		t.Fatalf("valueFree = %q", err)
	}
	if want := "read a chunk of public.t: invalid input for the column's type (SQLSTATE 22P02)"; err.Error() != want {
		t.Errorf("valueFree = %q, want %q", err, want)
	}
	gone := &pgconn.PgError{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"}
	err = valueFree(classify(fmt.Errorf("read: %w", gone)))
	if !errors.Is(err, sources.ErrDisconnected) || strings.Contains(err.Error(), "administrator") {
		t.Errorf("a shutdown: %q, want ErrDisconnected without the message", err)
	}
	for code, want := range map[string]string{"42501": "permission denied", "23999": "integrity constraint violation", "ZZ000": "PostgreSQL error"} {
		if got := dbError(&pgconn.PgError{Code: code}).Desc; got != want {
			t.Errorf("SQLSTATE %s: %q, want %q", code, got, want)
		}
	}
}
