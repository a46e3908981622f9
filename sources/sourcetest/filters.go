package sourcetest

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// canary is stored only in a table the source does not capture: no chunk
// or error may ever show it.
const canary = "CANARY-5e1f-never-leaves"

// badColumns are filter columns that are not exactly a column of people;
// the first ones would be SQL if they were written into a statement.
var badColumns = []string{
	"id) UNION SELECT secret FROM secrets --",
	"id; DROP TABLE people",
	`id" = 1 OR "id`,
	"id` = 1 OR `id",
	"name' OR '1'='1",
	"`id`", `"id"`, "ID", "Name", "mixed", "", "id\x00",
}

// payloads are filter values that would be SQL, or break a statement, if
// they were written into one: every one is bound.
var payloads = []string{
	"' OR 1=1 --",
	"' OR '1'='1",
	"0) UNION ALL SELECT id, secret, secret, 0, NULL, NULL, 0, 0, 0 FROM secrets -- ",
	"n1' UNION ALL SELECT id, secret, secret, 0, NULL, NULL, 0, 0, 0 FROM secrets -- ",
	"1; DROP TABLE people",
	"pg_sleep(5)",
	"'||pg_sleep(5)||'",
	"SLEEP(5)",
	"' OR SLEEP(5) OR '",
	`\' OR 1=1 -- `,
	`it's "q" \back\slash ` + "`b`",
	"$1",
	"?",
	"1 OR 1",
	"1abc",
	"n1\x00",
}

// filters: backfill filters select rows by bound values, never by SQL
// text; columns are checked first, against the captured tables only; the
// LIMIT holds; a statement timeout is reported as such; and errors quote
// no value. (The shared half of what each driver tested on its own;
// MySQL's checks of values before binding stay in its package.)
func filters(t *testing.T, h Harness) {
	ctx := testCtx(t)
	d := dialect{h.DB}
	s := h.DB.Schema()
	people := s + ".people"
	var rows [][]string
	for i := 1; i <= 30; i++ {
		region := "NULL"
		if i%3 != 0 {
			region = h.DB.String("r" + itoa(i%3))
		}
		born := time.Date(2000, 1, 1+i, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
		at := time.Date(2000, 1, 1, 10, 0, i, 0, time.UTC).Format(time.DateTime)
		rows = append(rows, []string{itoa(i), h.DB.String("n" + itoa(i)), region, strconv.FormatFloat(float64(i)*1.5, 'f', 1, 64),
			h.DB.String(born), h.DB.String(at), strconv.FormatInt(1<<53+int64(i), 10), itoa(i), strconv.FormatFloat(float64(i)/4, 'f', -1, 64)})
	}
	for i, name := range []string{payloads[0], payloads[10]} {
		rows = append(rows, []string{itoa(100 + i), h.DB.String(name), h.DB.String("lit"), "0", "NULL", "NULL", "0", "NULL", "0"})
	}
	digits := [][]string{}
	for i := range 10 {
		digits = append(digits, []string{itoa(i)})
	}
	// 300,000 rows, from the cross product of the digits.
	var from []string
	for _, alias := range []string{"a", "b", "c", "e", "f", "g"} {
		from = append(from, d.table("digits")+" "+alias)
	}
	big := "INSERT INTO " + d.table("big") + " SELECT a.i + 10*b.i + 100*c.i + 1000*e.i + 10000*f.i + 100000*g.i + 1, a.i FROM " +
		strings.Join(from, ", ") + " WHERE g.i < 3"
	d.recreate(t, ctx, "people", "id", col{name: "id", kind: Int}, col{name: "name", kind: Text}, col{name: "region", kind: Text},
		col{name: "score", kind: Decimal}, col{name: "born", kind: Date}, col{name: "at", kind: Timestamp},
		col{name: "big", kind: BigInt}, col{name: "Mixed", kind: Int}, col{name: "f", kind: Float})
	d.recreate(t, ctx, "secrets", "id", col{name: "id", kind: Int}, col{name: "secret", kind: Text})
	d.recreate(t, ctx, "digits", "i", col{name: "i", kind: Int})
	d.recreate(t, ctx, "big", "id", col{name: "id", kind: Int}, col{name: "v", kind: Int})
	d.exec(t, ctx, d.insert("people", rows...), d.insert("secrets", []string{"1", h.DB.String(canary)}), d.insert("digits", digits...))
	d.exec(t, ctx, big)
	spec, _ := d.spec(h, "filters", "people", "big")
	src := open(t, ctx, h.Driver, spec)

	var parsedSince func(context.Context) ([]string, error)
	if h.ParsedSQL != nil {
		var err error
		if parsedSince, err = h.ParsedSQL(ctx); err != nil {
			t.Fatalf("ParsedSQL: %v", err)
		}
	}
	read := func(t *testing.T, q sources.ChunkQuery) ([]int, error) {
		t.Helper()
		if q.Table == "" {
			q.Table = people
		}
		if q.Limit == 0 {
			q.Limit = 1000
		}
		ch, err := src.ReadChunk(ctx, q)
		ids := []int{}
		for _, r := range ch.Rows {
			for _, v := range r {
				if strings.Contains(string(v), "CANARY") {
					t.Fatalf("%v: a row carries the uncaptured table's canary: %s", q.Filters, v)
				}
			}
			n, err := strconv.Atoi(string(r[0]))
			if err != nil {
				t.Fatalf("id %s: %v", r[0], err)
			}
			ids = append(ids, n)
		}
		if err != nil && strings.Contains(err.Error(), "CANARY") {
			t.Fatalf("%v: the error carries the canary: %v", q.Filters, err)
		}
		return ids, err
	}
	f := func(col, op string, vals ...string) []sources.Filter {
		return []sources.Filter{{Column: col, Op: op, Values: vals}}
	}

	t.Run("columns", func(t *testing.T) {
		cols, err := src.Columns(ctx, people)
		if want := []string{"id", "name", "region", "score", "born", "at", "big", "Mixed", "f"}; err != nil || !slices.Equal(cols, want) {
			t.Errorf("Columns = %q, %v; want %q", cols, err, want)
		}
		for _, table := range []string{s + ".secrets", s + ".sluice_signal", "people", s + ".nosuch"} {
			if cols, err := src.Columns(ctx, table); err == nil || !strings.Contains(err.Error(), table) {
				t.Errorf("Columns(%s) = %q, %v; want an error naming the table", table, cols, err)
			}
		}
		if _, err := read(t, sources.ChunkQuery{Table: s + ".secrets"}); err == nil {
			t.Error("ReadChunk read an uncaptured table")
		}
	})

	t.Run("column names", func(t *testing.T) {
		for _, col := range badColumns {
			ids, err := read(t, sources.ChunkQuery{Filters: f(col, "=", "1")})
			if !errors.Is(err, sources.ErrBadFilter) || !strings.Contains(err.Error(), strconv.Quote(col)) {
				t.Errorf("filter on column %q: ids %v, %v; want ErrBadFilter naming it", col, ids, err)
			}
			var dbErr *sources.DBError
			if errors.As(err, &dbErr) {
				t.Errorf("filter on column %q reached the database: %v", col, err)
			}
		}
		if _, err := read(t, sources.ChunkQuery{Filters: f("mixed", "=", "1")}); err == nil || !strings.Contains(err.Error(), "did you mean Mixed") {
			t.Errorf("case-mismatched column: %v, want a hint naming Mixed", err)
		}
		for _, op := range []string{"= 1 OR 1=1 --", "LIKE", "==", "IN", "; DROP TABLE people"} {
			if _, err := read(t, sources.ChunkQuery{Filters: f("id", op, "1")}); !errors.Is(err, sources.ErrBadFilter) {
				t.Errorf("operator %q: %v, want ErrBadFilter", op, err)
			}
		}
		if ids, err := read(t, sources.ChunkQuery{}); err != nil || len(ids) != 32 {
			t.Fatalf("people after the refused filters: %d rows, %v", len(ids), err)
		}
	})

	t.Run("values are bound", func(t *testing.T) {
		start := time.Now()
		for _, p := range payloads {
			want := []int{}
			switch p {
			case payloads[0]:
				want = []int{100}
			case payloads[10]:
				want = []int{101}
			}
			ids, err := read(t, sources.ChunkQuery{Filters: f("name", "=", p)})
			if strings.Contains(p, "\x00") && err != nil {
				// PostgreSQL text holds no NUL: the server refuses it,
				// and the error must not quote it. MySQL finds no row.
				if refusedQuietly(err, p) != "" {
					t.Errorf("name = %q: %v, want no rows, or a DBError without the value", p, err)
				}
				continue
			}
			if err != nil || !slices.Equal(ids, want) {
				t.Errorf("name = %q: ids %v, %v; want %v", p, ids, err, want)
			}
			ids, err = read(t, sources.ChunkQuery{Filters: f("name", "in", p, "n2")})
			if want = append(want, 2); err != nil || !slices.Equal(ids, slices.Sorted(slices.Values(want))) {
				t.Errorf("name in (%q, n2): ids %v, %v; want %v", p, ids, err, want)
			}
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("the payloads took %v: did a sleep run?", d)
		}
		for _, p := range payloads[:5] {
			if ids, err := read(t, sources.ChunkQuery{Limit: 5, Filters: f("name", "<>", p)}); err != nil || len(ids) != 5 {
				t.Errorf("name <> %q with limit 5: %d rows, %v", p, len(ids), err)
			}
		}
		// On a column of another type the value is refused, by the driver
		// (ErrBadFilter) or by the server (a DBError), never quoted.
		for _, col := range []string{"id", "big", "score", "born", "at", "f", "Mixed"} {
			for _, p := range append(slices.Clone(payloads), "2000-13-45 "+canary) {
				ids, err := read(t, sources.ChunkQuery{Filters: f(col, "=", p)})
				if problem := refusedQuietly(err, p); problem != "" {
					t.Errorf("%s = %q: ids %v, %v: %s", col, p, ids, err, problem)
				}
			}
		}
		if ids, err := read(t, sources.ChunkQuery{Filters: f("id", "=", "7")}); err != nil || !slices.Equal(ids, []int{7}) {
			t.Errorf("after the refusals: %v, %v", ids, err)
		}
	})

	t.Run("operators", func(t *testing.T) {
		nulls := []int{}
		for i := 3; i <= 30; i += 3 {
			nulls = append(nulls, i)
		}
		and := func(fs ...[]sources.Filter) []sources.Filter { return slices.Concat(fs...) }
		from := func(id string) []sources.Value { return []sources.Value{sources.Value(id)} }
		for _, c := range []struct {
			filters []sources.Filter
			from    []sources.Value
			want    []int
		}{
			{f("id", "=", "5"), nil, []int{5}},
			{f("id", "in", "1", "2", "3", "99"), nil, []int{1, 2, 3}},
			{f("id", "<", "4"), nil, []int{1, 2, 3}},
			{f("id", "<=", "3"), nil, []int{1, 2, 3}},
			{f("id", ">", "29"), nil, []int{30, 100, 101}},
			{and(f("id", ">=", "30"), f("id", "<>", "100")), nil, []int{30, 101}},
			{f("region", "is null"), nil, nulls},
			{and(f("region", "is not null"), f("id", "<", "5")), nil, []int{1, 2, 4}},
			{f("region", "is null"), from("10"), nulls[3:]},
			{and(f("region", "=", "r1"), f("id", "in", "1", "4", "5")), from("2"), []int{4}},
			{f("score", ">=", "43.5"), nil, []int{29, 30}},
			{f("score", "=", "43.50000"), nil, []int{29}},
			{f("score", "=", "43.501"), nil, []int{}},
			{f("born", "<=", "2000-01-03"), nil, []int{1, 2}},
			{f("at", "=", "2000-01-01T10:00:07Z"), nil, []int{7}},
			{f("at", "in", "2000-01-01 10:00:08", "2000-01-01 10:00:09.000000"), nil, []int{8, 9}},
			// A big integer past 2^53 compares exactly, not as a double.
			{f("big", "=", strconv.FormatInt(1<<53+3, 10)), nil, []int{3}},
			{f("f", "=", "1.25"), nil, []int{5}},
			{f("Mixed", "=", "9"), nil, []int{9}},
			{and(f("name", "<", "n11"), f("id", "<", "50")), nil, []int{1, 10}},
		} {
			if ids, err := read(t, sources.ChunkQuery{Filters: c.filters, From: c.from}); err != nil || !slices.Equal(ids, c.want) {
				t.Errorf("%v from %s: ids %v, %v; want %v", c.filters, c.from, ids, err, c.want)
			}
		}
		// A whole table in chunks of 4, with a filter: each chunk at most 4.
		var got []int
		var next []sources.Value
		for {
			ids, err := read(t, sources.ChunkQuery{Limit: 4, From: next, Filters: f("region", "is null")})
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) > 4 {
				t.Fatalf("a chunk of 4 has %d rows", len(ids))
			}
			page := ids
			if next != nil {
				page = ids[1:]
			}
			got = append(got, page...)
			if len(ids) < 4 {
				break
			}
			next = from(itoa(ids[len(ids)-1]))
		}
		if !slices.Equal(got, nulls) {
			t.Errorf("paged with a filter: %v, want %v", got, nulls)
		}
	})

	t.Run("statement timeout", func(t *testing.T) {
		// A full scan of 300,000 rows cannot finish within a millisecond.
		big := s + ".big"
		_, err := read(t, sources.ChunkQuery{Table: big, Limit: 10, Timeout: time.Millisecond, Filters: f("v", "=", "-1")})
		var dbErr *sources.DBError
		if !errors.Is(err, sources.ErrStatementTimeout) || !errors.As(err, &dbErr) {
			t.Fatalf("a full scan with a 1ms timeout: %v, want ErrStatementTimeout from the database", err)
		}
		if !strings.Contains(err.Error(), "backfill.statement_timeout") || errors.Is(err, sources.ErrDisconnected) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the timeout error %q must name backfill.statement_timeout and not look transient", err)
		}
		if dbErr.Err != nil && strings.Contains(err.Error(), dbErr.Err.Error()) {
			t.Errorf("the timeout error %q quotes the database's own error", err)
		}
		// The timeout was the chunk's alone.
		if ids, err := read(t, sources.ChunkQuery{Table: big, Limit: 10, Filters: f("v", "=", "-1")}); err != nil || len(ids) != 0 {
			t.Errorf("the same scan without a timeout: %v, %v", ids, err)
		}
		if ids, err := read(t, sources.ChunkQuery{Table: big, Limit: 3, Timeout: time.Minute, Filters: f("id", ">", "299998")}); err != nil || !slices.Equal(ids, []int{299999, 300000}) {
			t.Errorf("with a generous timeout: %v, %v", ids, err)
		}

		// A lock held elsewhere keeps the SELECT waiting past its
		// timeout, however fast the machine.
		if h.Lock == nil {
			t.Skip("needs Harness.Lock for a read behind a lock")
		}
		unlock, err := h.Lock(ctx, people)
		if err != nil {
			t.Fatal(err)
		}
		_, err = read(t, sources.ChunkQuery{Timeout: 100 * time.Millisecond, Filters: f("name", "=", canary)})
		if uerr := unlock(); uerr != nil {
			t.Fatal(uerr)
		}
		if !errors.Is(err, sources.ErrStatementTimeout) || !errors.As(err, &dbErr) {
			t.Fatalf("ReadChunk behind a lock with a timeout: %v, want ErrStatementTimeout from the database", err)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		if h.Lock == nil {
			t.Skip("needs Harness.Lock")
		}
		// ReadChunk ends with its context, even while the SELECT waits
		// for a lock, and the source reads on afterwards.
		unlock, err := h.Lock(ctx, people)
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = src.ReadChunk(short, sources.ChunkQuery{Table: people, Limit: 10})
		took := time.Since(start)
		if uerr := unlock(); uerr != nil {
			t.Fatal(uerr)
		}
		if !errors.Is(err, context.DeadlineExceeded) || took > 1500*time.Millisecond {
			t.Errorf("ReadChunk past its deadline: %v after %v, want context.DeadlineExceeded at once", err, took)
		}
		if ids, err := read(t, sources.ChunkQuery{Filters: f("id", ">", "29")}); err != nil || !slices.Equal(ids, []int{30, 100, 101}) {
			t.Errorf("ReadChunk after a cancelled one: %v, %v", ids, err)
		}
	})

	t.Run("no filter text in SQL", func(t *testing.T) {
		if parsedSince == nil {
			t.Skip("needs Harness.ParsedSQL")
		}
		parsed, err := parsedSince(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(parsed, func(sql string) bool { return strings.Contains(sql, "people") && strings.Contains(sql, "WHERE") }) {
			t.Fatalf("the server parsed no filtered chunk statement: is the recording on? %q", parsed)
		}
		for _, sql := range parsed {
			for _, p := range slices.Concat(payloads, badColumns[:5]) {
				if len(p) > 3 && strings.Contains(sql, p) {
					t.Errorf("filter text %q is in a statement the server parsed: %s", p, sql)
				}
			}
		}
	})
}

// refusedQuietly says what is wrong with err as the refusal of the filter
// value v: "" when it is ErrBadFilter or a database error, does not quote
// v and does not look like a lost connection.
func refusedQuietly(err error, v string) string {
	var dbErr *sources.DBError
	switch {
	case err == nil:
		return "want it refused"
	case !errors.Is(err, sources.ErrBadFilter) && !errors.As(err, &dbErr):
		return "want ErrBadFilter or a DBError"
	case len(v) > 3 && strings.Contains(err.Error(), v), strings.Contains(err.Error(), "CANARY"):
		return "the error quotes the value"
	case errors.Is(err, sources.ErrDisconnected):
		return "a value error counts as a disconnect"
	}
	return ""
}
