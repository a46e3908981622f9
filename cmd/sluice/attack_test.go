package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/backfill"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// attack is one hostile backfill request and what sluice must answer.
type attack struct {
	name string
	req  string // the raw request body
	// refused: the reply is an error mentioning these; else the job runs
	// and must select nothing.
	refused []string
}

// canary is a value of an uncaptured table; no request may bring it out.
const canary = "999-88-7777-canary"

// sqlAttacks are the payloads of the security review, sent where the old
// where text went, as column names, as operators and as filter values.
func sqlAttacks(table, otherTable, sleep string) []attack {
	union := "false) UNION ALL SELECT id, ssn, NULL FROM " + otherTable + " --"
	f := func(col, op string, vals ...string) string {
		b, _ := json.Marshal(map[string]any{"tables": []string{table}, "filters": []map[string]any{{"column": col, "op": op, "values": vals}}})
		return string(b)
	}
	return []attack{
		{"where field", `{"tables":["` + table + `"],"where":"` + strings.ReplaceAll(union, `"`, `\"`) + `"}`, []string{`unknown field "where"`, "--filter"}},
		{"unknown field", `{"tables":["` + table + `"],"sql":"SELECT 1"}`, []string{`unknown field "sql"`}},
		{"union as column", f("id) UNION ALL SELECT id, ssn, NULL FROM "+otherTable+" --", "=", "1"), []string{"has no column", "its columns"}},
		{"stacked statement as column", f("id; DROP TABLE "+table, "=", "1"), []string{"has no column"}},
		{"quote in column", f(`status" = status OR "1`, "=", "1"), []string{"has no column"}},
		{"sleep as column", f(sleep, "is null"), []string{"has no column"}},
		{"operator injection", f("status", "= 'x' OR 1=1 --", "1"), []string{"operator", "use one of"}},
		{"table injection", `{"tables":["` + table + `; DROP TABLE ` + table + `"]}`, []string{"not captured"}},
		{"union as value", f("status", "=", union), nil},
		{"comment out the limit", f("status", "<>", "x' --"), nil}, // matches every row: the LIMIT must hold
		{"sleep as value", f("status", "=", sleep), nil},
		{"stacked statement as value", f("status", "in", "a'; DROP TABLE "+table+"; --", "b"), nil},
		{"quotes and backslashes", f("status", "=", `\' OR '1'='1`), nil},
	}
}

// runAttacks sends each attack to the running sluice of e and checks the
// answer; the stream, the checkpoint bucket and the log never show the
// canary, and the captured table still exists.
func runAttacks(t *testing.T, e *env, logs *logBuffer, attacks []attack, rows int) {
	t.Helper()
	nc, err := controlClient(e.cfg, e.client).connect("attacker")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	for _, a := range attacks {
		start := time.Now()
		msg, err := nc.Request(backfill.StartSubject(e.cfg.Source.Name), []byte(a.req), 30*time.Second)
		if err != nil {
			t.Fatalf("%s: no answer: %v", a.name, err)
		}
		var rep backfill.Reply
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			t.Fatal(err)
		}
		if a.refused != nil {
			if rep.Error == "" {
				t.Errorf("%s: accepted, want refused", a.name)
			}
			for _, m := range a.refused {
				if !strings.Contains(rep.Error, m) {
					t.Errorf("%s: answer %q does not mention %q", a.name, rep.Error, m)
				}
			}
			continue
		}
		if rep.Error != "" || len(rep.Jobs) != 1 {
			t.Fatalf("%s: %+v", a.name, rep)
		}
		job := waitJob(t, e, rep.Jobs[0].ID)
		if job.State != backfill.StateDone {
			t.Errorf("%s: job %s: %s", a.name, job.State, job.Error)
		}
		if job.Rows > int64(rows) {
			t.Errorf("%s: the job read %d rows of a %d-row table", a.name, job.Rows, rows)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("%s: took %s: did a sleep run?", a.name, took)
		}
	}
	// Nothing anywhere holds the canary.
	for _, ev := range readEvents(t, e.natsURL(), e.cfg.Stream.Name, int(streamCount(t, e.natsURL(), e.cfg.Stream.Name)), time.Minute) {
		if strings.Contains(ev.raw, canary) {
			t.Errorf("stream message on %s carries the canary: %s", ev.subject, ev.raw)
		}
	}
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, e.cfg.Checkpoint.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		v, err := kv.Get(ctx, k)
		if err == nil && strings.Contains(string(v.Value()), canary) {
			t.Errorf("bucket value %s carries the canary", k)
		}
	}
	if strings.Contains(logs.String(), canary) {
		t.Error("the log carries the canary")
	}
}

// waitJob waits until the job id is no longer running.
func waitJob(t *testing.T, e *env, id string) backfill.Job {
	t.Helper()
	nc, err := controlClient(e.cfg, e.client).connect("watcher")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		rep, err := backfill.Ask(context.Background(), nc, backfill.JobsSubject(e.cfg.Source.Name), struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range rep.Jobs {
			if j.ID == id && j.State != backfill.StateRunning {
				return j
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("job %s still runs after a minute", id)
	return backfill.Job{}
}

// TestSQLAttacksPostgres sends the review's SQL payloads to a running
// sluice on PostgreSQL: none reaches SQL, and the SSN of an uncaptured
// table never comes out.
func TestSQLAttacksPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.orders")
	e.setYAML("backfill: {initial: false}", "backfill: {initial: false, chunk_size: 16, statement_timeout: 10s}")
	e.exec(`CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, note text)`)
	e.exec(`INSERT INTO orders SELECT g, 'new', NULL FROM generate_series(1, 50) g`)
	e.exec(`CREATE TABLE users (id int PRIMARY KEY, email text, ssn text)`)
	e.exec(`INSERT INTO users VALUES (1, 'a@example.com', '` + canary + `')`)
	stop, logs := e.startRun()
	runAttacks(t, e, logs, sqlAttacks("public.orders", "public.users", "pg_sleep(40)"), 50)
	e.exec(`SELECT count(*) FROM orders`) // still there
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSQLAttacksMySQL is the same against MariaDB, with SLEEP and the
// server's own account table as the prize.
func TestSQLAttacksMySQL(t *testing.T) {
	t.Parallel()
	my := mysqltest.New(t)
	e := newMySQLEnv(t, my, "shop.orders")
	e.setYAML("backfill: {initial: false}", "backfill: {initial: false, chunk_size: 16, statement_timeout: 10s}")
	e.exec(`CREATE TABLE orders (id int PRIMARY KEY, status varchar(200) NOT NULL, note text)`)
	e.exec(`INSERT INTO orders SELECT seq, 'new', NULL FROM seq_1_to_50`)
	e.exec(`CREATE TABLE users (id int PRIMARY KEY, email text, ssn text)`)
	e.exec(`INSERT INTO users VALUES (1, 'a@example.com', '` + canary + `')`)
	stop, logs := e.startRun()
	runAttacks(t, e, logs, sqlAttacks("shop.orders", "shop.users", "SLEEP(40)"), 50)
	e.exec(`SELECT count(*) FROM orders`)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
