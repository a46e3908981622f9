package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/backfill"
	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// streamView reads the whole stream and applies it to a reference
// consumer's view.
func streamView(t *testing.T, url, stream string) (*consumer.View, []event) {
	t.Helper()
	f := newFollower(t, url, stream)
	f.catchUp(t)
	return f.view, f.events
}

// follower applies a stream to a reference consumer's view as it grows.
type follower struct {
	url    string
	stream string
	cons   jetstream.Consumer
	view   *consumer.View
	events []event
}

func newFollower(t *testing.T, url, stream string) *follower {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := natsClient{}.jetStream(nc)
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &follower{url: url, stream: stream, cons: c, view: consumer.NewView()}
}

// catchUp applies every message the stream holds now.
func (f *follower) catchUp(t *testing.T) {
	t.Helper()
	want := streamCount(t, f.url, f.stream)
	for uint64(len(f.events)) < want {
		batch, err := f.cons.Fetch(10000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			e := decodeEvent(t, m)
			if err := f.view.Apply(e.subject, m.Data()); err != nil {
				t.Fatal(err)
			}
			f.events = append(f.events, e)
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
}

// idToV reads a view's table of (id int key, v int) rows.
func idToV(t *testing.T, v *consumer.View, name consumer.TableName) map[int]int {
	t.Helper()
	out := map[int]int{}
	for _, r := range v.Rows(name) {
		var id, val int
		if err := json.Unmarshal(r.Key[0], &id); err != nil {
			t.Fatalf("key %s: %v", r.Key[0], err)
		}
		if err := json.Unmarshal(r.Columns["v"], &val); err != nil {
			t.Fatalf("v %s: %v", r.Columns["v"], err)
		}
		out[id] = val
	}
	return out
}

// diffView compares the view of a table of (key, v) rows with the source,
// whose rows are keyed by their canonical key text (`[5]`, `["a1"]`),
// without sorting a million rows per look.
func diffView(v *consumer.View, name consumer.TableName, want map[string]int) (missing, stale, extra int) {
	found := 0
	for key, w := range want {
		r, ok := v.Lookup(name, key)
		switch {
		case !ok:
			missing++
		case string(r.Columns["v"]) != strconv.Itoa(w):
			found++
			stale++
		default:
			found++
		}
	}
	// The streams of these tests hold one table.
	return missing, stale, v.Len() - found
}

// assertViewConverges waits until the consumer's view of the table of
// (id int key, v) rows equals the source, then returns the events it read.
func assertViewConverges(t *testing.T, url, stream string, name consumer.TableName, source func() (map[int]int, error)) []event {
	t.Helper()
	return assertKeyedViewConverges(t, url, stream, name, keyedByID(source))
}

// keyedByID turns a source of rows by int id into one by canonical key
// text, as assertKeyedViewConverges compares them.
func keyedByID(source func() (map[int]int, error)) func() (map[string]int, error) {
	return func() (map[string]int, error) {
		ids, err := source()
		keyed := make(map[string]int, len(ids))
		for id, v := range ids {
			keyed["["+strconv.Itoa(id)+"]"] = v
		}
		return keyed, err
	}
}

// assertKeyedViewConverges is assertViewConverges for any one-column key:
// source returns the rows by their canonical key text.
func assertKeyedViewConverges(t *testing.T, url, stream string, name consumer.TableName, source func() (map[string]int, error)) []event {
	t.Helper()
	f := newFollower(t, url, stream)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		want, err := source()
		if err != nil {
			t.Fatal(err)
		}
		f.catchUp(t)
		missing, stale, extra := diffView(f.view, name, want)
		if missing+stale+extra == 0 {
			t.Logf("view of %s equals the source: %d rows, %d events", name.Qualified(), len(want), len(f.events))
			return f.events
		}
		if time.Now().After(deadline) {
			shown := 0
			for key, w := range want {
				r, ok := f.view.Lookup(name, key)
				if !ok || string(r.Columns["v"]) == strconv.Itoa(w) || shown >= 3 {
					continue
				}
				shown++
				t.Logf("key %s: source v=%d, view v=%s; its events:", key, w, r.Columns["v"])
				for _, ev := range f.events {
					if "["+string(ev.Key["id"])+"]" == key {
						t.Logf("  seq %d %s v=%s pos=%s msg=%s", ev.seq, ev.Op, ev.After["v"], ev.Source.Pos, ev.msgID)
					}
				}
			}
			t.Fatalf("view of %s differs from the source: %d rows missing, %d stale, %d extra (source %d rows)",
				name.Qualified(), missing, stale, extra, len(want))
		}
		time.Sleep(time.Second)
	}
}

// assertNoStaleRead proves that no backfilled row overwrote a newer logged
// change: v only grows, so an "r" event must never carry a v below the
// last one the log published for its key.
func assertNoStaleRead(t *testing.T, events []event) {
	t.Helper()
	last := map[string]int{}
	reads := 0
	for _, ev := range events {
		if ev.After == nil {
			continue
		}
		var v int
		if err := json.Unmarshal(ev.After["v"], &v); err != nil {
			continue
		}
		k := string(ev.Key["id"])
		switch ev.Op {
		case "r":
			reads++
			if prev, ok := last[k]; ok && v < prev {
				t.Fatalf("backfilled row id=%s has v=%d, older than the logged v=%d before it: %s", k, v, prev, ev.raw)
			}
			last[k] = v
		case "c", "u":
			last[k] = v
		}
	}
	if reads == 0 {
		t.Fatal("no backfill rows in the stream")
	}
}

// waitBackfills waits until n backfills have ended done in the run
// started last (sluice_backfills_total), failing the test at once if one
// failed.
func (e *env) waitBackfills(n int, timeout time.Duration, logs *logBuffer) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if failed := e.counter("sluice_backfills_total", "outcome", backfill.StateFailed); failed > 0 {
			e.t.Fatalf("%v backfills failed; log:\n%s", failed, tailLines(logs.String(), 40))
		}
		done := e.counter("sluice_backfills_total", "outcome", backfill.StateDone)
		if done >= float64(n) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%v of %d backfills done within %s; log:\n%s", done, n, timeout, tailLines(logs.String(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pgState(conn *pgx.Conn) func() (map[int]int, error) {
	return func() (map[int]int, error) { return pgCrashDB{conn}.state() }
}

// readGaps returns the gaps recorded in the checkpoint bucket.
func readGaps(t *testing.T, e *env) []backfill.Gap {
	t.Helper()
	return gapsIn(t, e, adminState(t, e))
}

// waitGap waits until the running sluice has recorded a gap with where
// streaming resumed after it, and returns it.
func waitGap(t *testing.T, e *env, timeout time.Duration) backfill.Gap {
	t.Helper()
	js := adminState(t, e)
	deadline := time.Now().Add(timeout)
	for {
		for _, g := range gapsIn(t, e, js) {
			if g.To != "" {
				return g
			}
		}
		select {
		case <-e.finished:
			t.Fatal("sluice exited before it recorded a gap")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no gap recorded within %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gapsIn reads the gap records of e's source through js.
func gapsIn(t *testing.T, e *env, js jetstream.JetStream) []backfill.Gap {
	t.Helper()
	bucket, source := e.cfg.Checkpoint.Bucket, e.cfg.Source.Name
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeysFiltered(ctx, "gap."+source+".>")
	if err != nil {
		t.Fatal(err)
	}
	var gaps []backfill.Gap
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		var g backfill.Gap
		if err := json.Unmarshal(e.Value(), &g); err != nil {
			t.Fatal(err)
		}
		gaps = append(gaps, g)
	}
	return gaps
}

// TestBackfillAfterLogLoss is the outage test: sluice stops, the table
// keeps changing (inserts, updates, deletes), the log goes (the slot is
// dropped, the binlogs purged); on restart the gap is recorded, streaming
// resumes and the backfill makes the consumer's view equal the table,
// deleted rows included, while changes keep coming.
func TestBackfillAfterLogLoss(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, db database) {
		e, conn := db.start(t, "items")
		e.setYAML("backfill: {initial: false}", "backfill: {initial: false, chunk_size: 300}")
		e.exec(`CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL)`)

		stop, _ := e.startRun()
		for from := 1; from <= 3000; from += 500 {
			e.exec(`INSERT INTO items VALUES ` + valuesList(from, from+499))
		}
		readRows(t, e.natsURL(), e.cfg.Stream.Name, 3000, time.Minute)
		waitCheckpoint(t, e)
		if err := stop(); err != nil {
			t.Fatal(err)
		}

		// The outage: changes nobody streams, then the log goes.
		e.exec(`UPDATE items SET v = v + 1 WHERE id % 7 = 0`)
		e.exec(`DELETE FROM items WHERE id % 11 = 0 OR id BETWEEN 1 AND 350 OR id > 2950`)
		e.exec(`INSERT INTO items VALUES ` + strings.ReplaceAll(valuesList(3001, 3400), ", 0)", ", 5)"))
		if err := conn.loseLog(context.Background()); err != nil {
			t.Fatal(err)
		}

		stop, logs := e.startRun()
		stopWriter := startWriter(t, testSeed(t), time.Millisecond, func(rng *rand.Rand) error {
			id := 1 + rng.IntN(3400)
			switch rng.IntN(4) {
			case 0:
				return conn.tx([]string{fmt.Sprintf("DELETE FROM items WHERE id = %d", id)})
			case 1:
				return conn.tx([]string{fmt.Sprintf(db.upsert, id)})
			default:
				return conn.tx([]string{fmt.Sprintf("UPDATE items SET v = v + 1 WHERE id = %d", id)})
			}
		})
		e.waitBackfills(1, 2*time.Minute, logs)
		stopWriter()
		if !strings.Contains(logs.String(), "log position lost: gap recorded") {
			t.Errorf("the gap was not logged:\n%s", tailLines(logs.String(), 30))
		}
		events := assertViewConverges(t, e.natsURL(), e.cfg.Stream.Name, consumer.TableName{Source: db.source, Schema: db.schema, Table: "items"}, conn.state)
		assertNoStaleRead(t, events)
		chunks := 0
		for _, ev := range events {
			if ev.Op == "chunk" {
				chunks++
			}
		}
		if chunks == 0 {
			t.Error("no chunk events were published")
		}
		// A durable consumer that read nothing yet.
		if _, err := e.eventsAdmin().CreateConsumer(context.Background(), e.cfg.Stream.Name, jetstream.ConsumerConfig{Durable: "analytics", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
		// sluice status shows the gap, the finished backfill, the
		// partitions and the consumers.
		st, err := readStatus(context.Background(), e.cfg, natsClient{})
		if err != nil {
			t.Fatal(err)
		}
		// The partitions hold the events; _schema, the table's first
		// shape.
		var sum uint64
		for _, n := range st.Partitions {
			sum += n
		}
		if len(st.Gaps) != 1 || len(st.Backfills) != 1 || st.Backfills[0].State != backfill.StateDone || st.Checkpoint == nil ||
			sum != st.Messages-1 || len(st.Other) != 1 || st.Other["_schema"] != 1 || st.Messages != uint64(len(events)) {
			t.Errorf("status: %+v (partitions add up to %d, %d events)", st, sum, len(events))
		}
		var out strings.Builder
		if err := printStatus(&out, st, time.Now()); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"checkpoint  ", "gap  ", db.schema + ".items: done", "partitions  0:", "_schema     1 messages", fmt.Sprintf("consumer    analytics: %d pending, acknowledged to seq 0, oldest unacknowledged from", len(events))} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("sluice status has no %q:\n%s", want, out.String())
			}
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		gaps := readGapsStopped(t, e)
		if len(gaps) != 1 || gaps[0].From == "" || gaps[0].To == "" || len(gaps[0].Jobs) != 1 || !strings.Contains(gaps[0].Cause, db.gapCause) {
			t.Fatalf("gaps recorded = %+v, want one with from, to, its job and the cause (%q)", gaps, db.gapCause)
		}
		t.Logf("gap %s → %s repaired by %d chunk events on 4 partitions", gaps[0].From, gaps[0].To, chunks)
	})
}

// adminState is JetStream in sluice's state account (checkpoint bucket),
// logged in as the CLI on sluice's host is; closed with the test.
func adminState(t testing.TB, e *env) jetstream.JetStream {
	t.Helper()
	nc, err := controlClient(e.cfg, e.client).connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// waitCheckpoint waits until the running sluice has written a checkpoint.
func waitCheckpoint(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	store, err := checkpoint.Open(ctx, adminState(t, e), e.cfg.Checkpoint.Bucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if cp, ok, err := store.Load(ctx, e.cfg.Source.Name); err == nil && ok && cp.Position != "" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no checkpoint written within a minute")
}

// readGapsStopped reads the gaps of a stopped sluice by starting its
// embedded server alone.
func readGapsStopped(t *testing.T, e *env) []backfill.Gap {
	t.Helper()
	srv := startStoreServer(t, e)
	defer srv()
	return readGaps(t, e)
}

// With on_gap: fail a lost log position stops sluice with an error naming
// the setting.
func TestBackfillOnGapFail(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, db database) {
		e, conn := db.start(t, "items")
		e.setYAML("backfill: {initial: false}", "backfill: {initial: false, on_gap: fail}")
		e.exec(`CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL)`)
		stop, _ := e.startRun()
		e.exec(`INSERT INTO items VALUES (1, 0)`)
		readRows(t, e.natsURL(), e.cfg.Stream.Name, 1, time.Minute)
		// A gap needs a checkpoint: the event's commit must be
		// checkpointed, not only the event stored, before sluice stops.
		waitCheckpoint(t, e)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		for i := 2; i < 5; i++ {
			e.exec(fmt.Sprintf(`INSERT INTO items VALUES (%d, 0)`, i))
		}
		if err := conn.loseLog(context.Background()); err != nil {
			t.Fatal(err)
		}
		err, _ := runErr(t, e.cfg)
		if !errors.Is(err, sources.ErrLogLost) {
			t.Fatalf("run after the log was lost = %v, want ErrLogLost", err)
		}
		mentions(t, err, db.gapCause, "on_gap")
	})
}

// TestBackfillCommand asks a running sluice for backfills with sluice
// backfill: a full one (rows present before capture started, a composite
// text key) and a filtered one (rows only, no chunk events).
func TestBackfillCommand(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items", "public.accounts")
	e.setYAML("backfill: {initial: false}", "backfill: {initial: false, chunk_size: 50}")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)`)
	e.exec(`CREATE TABLE accounts (region text, n bigint, v int NOT NULL, PRIMARY KEY (region, n))`)
	e.exec(`INSERT INTO items SELECT g, g % 5 FROM generate_series(1, 500) g`)
	e.exec(`INSERT INTO accounts SELECT r, g, 0 FROM unnest(ARRAY['eu', 'EU', 'us', 'ü', 'a b']) r, generate_series(1, 40) g`)
	stop, logs := e.startRun()

	var out strings.Builder
	if err := requestBackfill(context.Background(), &out, e.cfg, natsClient{}, []string{"public.items", "public.accounts"}, nil, true); err != nil {
		t.Fatalf("sluice backfill: %v\n%s", err, logs)
	}
	for _, want := range []string{"public.items: done", "public.accounts: done", "500/500 rows"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("sluice backfill printed no %q:\n%s", want, out.String())
		}
	}
	conn := pgConn(t, pg)
	v, events := streamView(t, e.natsURL(), e.cfg.Stream.Name)
	if got := len(v.Rows(consumer.TableName{Source: "pg1", Schema: "public", Table: "accounts"})); got != 200 {
		t.Errorf("view has %d accounts, want 200", got)
	}
	want, err := pgCrashDB{conn}.state()
	if err != nil {
		t.Fatal(err)
	}
	if got := idToV(t, v, consumer.TableName{Source: "pg1", Schema: "public", Table: "items"}); !equalState(got, want) {
		t.Errorf("view of items has %d rows, the table %d", len(got), len(want))
	}
	for _, ev := range events {
		if ev.Op == "r" && (!ev.Source.Snapshot || !strings.Contains(ev.raw, `"chunk":"`)) {
			t.Fatalf("backfill row without source.snapshot and source.chunk: %s", ev.raw)
		}
	}

	// sluice tail --materialize prints the same rows.
	var rows strings.Builder
	if err := tailWith(context.Background(), &rows, natsClient{URL: e.natsURL()}, "cdc.pg1.>", tailOptions{FromStart: true, Materialize: true, Idle: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(rows.String()), "\n")
	if len(lines) != 700 || !strings.Contains(rows.String(), `{"source":"pg1","table":"public.accounts","key":{"region":"ü","n":7},"row":{"n":7,"region":"ü","v":0}}`+"\n") {
		t.Errorf("tail --materialize printed %d rows, want 700, among them ü/7:\n%s", len(lines), tailLines(rows.String(), 5))
	}

	// --filter: only matching rows, and no chunk event (it would delete the
	// rows the condition left out).
	before := streamCount(t, e.natsURL(), e.cfg.Stream.Name)
	out.Reset()
	f, err := sources.ParseFilter("v = 3")
	if err != nil {
		t.Fatal(err)
	}
	if err := requestBackfill(context.Background(), &out, e.cfg, natsClient{}, []string{"public.items"}, []sources.Filter{f}, true); err != nil {
		t.Fatalf("sluice backfill --filter: %v", err)
	}
	events = readEvents(t, e.natsURL(), e.cfg.Stream.Name, int(streamCount(t, e.natsURL(), e.cfg.Stream.Name)), time.Minute)[before:]
	if len(events) != 100 {
		t.Fatalf("--filter v = 3 published %d events, want the 100 matching rows", len(events))
	}
	for _, ev := range events {
		if ev.Op != "r" || string(ev.After["v"]) != "3" {
			t.Fatalf("--filter v = 3 published %s", ev.raw)
		}
	}

	// Bad requests name the fix.
	err = requestBackfill(context.Background(), &out, e.cfg, natsClient{}, []string{"public.nope"}, nil, false)
	mentions(t, err, "public.nope", "not captured", "public.items")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	err = requestBackfill(context.Background(), &out, e.cfg, natsClient{}, []string{"public.items"}, nil, false)
	mentions(t, err, "is sluice", "running")
}

// A table whose key cannot be chunked fails its backfill with the reason;
// streaming goes on.
func TestBackfillUnsupportedKey(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.events")
	e.exec(`CREATE TABLE events (at timestamptz PRIMARY KEY, v int NOT NULL)`)
	e.exec(`INSERT INTO events VALUES (now(), 1)`)
	stop, logs := e.startRun()
	var out strings.Builder
	err := requestBackfill(context.Background(), &out, e.cfg, natsClient{}, []string{"public.events"}, nil, true)
	mentions(t, err, "public.events", "at", "timestamp with time zone", "not supported")
	e.exec(`INSERT INTO events VALUES (now() + interval '1 day', 2)`)
	readRows(t, e.natsURL(), e.cfg.Stream.Name, 1, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
}

// TestBackfillResumesAfterKill kills sluice with SIGKILL in the middle of a
// backfill: after restart the job resumes at its last stored chunk rather
// than from the start, and the view still equals the table.
func TestBackfillResumesAfterKill(t *testing.T) { resumesAfterKill(t, false, false) }

// TestInitialSnapshotResumesAfterKill: the same for the initial snapshot,
// which no flag asks for.
func TestInitialSnapshotResumesAfterKill(t *testing.T) { resumesAfterKill(t, true, false) }

// TestBackfillTextKeyResumesAfterKill: the same for a text key in a
// collation that does not order bytewise (en-x-icu: 'a' < 'B', while the
// chunks go bytewise, 'B' < 'a'), under updates, deletes and inserts, with
// chunks that overlap their neighbours' flushes.
func TestBackfillTextKeyResumesAfterKill(t *testing.T) { resumesAfterKill(t, false, true) }

func resumesAfterKill(t *testing.T, initial, textKey bool) {
	if testing.Short() {
		t.Skip("builds and kills the binary: skipped in -short")
	}
	const rows = 50000
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	args := []string{"run", "--config", e.cfgYML, "--backfill", "public.items"}
	if initial {
		e.setYAML("backfill: {initial: false}", "backfill: {chunk_size: 250}")
		args = args[:3]
	} else {
		e.setYAML("backfill: {initial: false}", "backfill: {initial: false, chunk_size: 250}")
	}
	conn := pgConn(t, pg)
	// key names row i; a writer also inserts rows past the table's end.
	key := func(i int) any { return i }
	state := keyedByID(pgState(conn))
	if textKey {
		// Letters of both cases lead, so bytewise and en-x-icu order differ
		// all through the table.
		const letters = "aAbBcCdDeEfFgGhHiIjJkKlLmMnNoOpPqQrRsStTuUvVwWxXyYzZ"
		key = func(i int) any { return fmt.Sprintf("%c%06d", letters[i%len(letters)], i) }
		state = func() (map[string]int, error) {
			rows, err := conn.Query(context.Background(), "SELECT id, v FROM items")
			if err != nil {
				return nil, err
			}
			keyed := map[string]int{}
			for rows.Next() {
				var id string
				var v int
				if err := rows.Scan(&id, &v); err != nil {
					return nil, err
				}
				k, _ := json.Marshal([]string{id})
				keyed[string(k)] = v
			}
			return keyed, rows.Err()
		}
		e.exec(`CREATE TABLE items (id text COLLATE "en-x-icu" PRIMARY KEY, v int NOT NULL)`)
		var differ bool
		if err := conn.QueryRow(context.Background(), `SELECT 'a' COLLATE "en-x-icu" < 'B' AND 'B' COLLATE "C" < 'a'`).Scan(&differ); err != nil || !differ {
			t.Fatalf("en-x-icu does not order 'a' before 'B' here (%v): the test would not tell the orders apart", err)
		}
		if _, err := conn.Exec(context.Background(), `INSERT INTO items SELECT substr($1, g % 52 + 1, 1) || lpad(g::text, 6, '0'), 0 FROM generate_series(1, $2::int) g`, letters, rows); err != nil {
			t.Fatal(err)
		}
	} else {
		e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)`)
		e.exec(fmt.Sprintf(`INSERT INTO items SELECT g, 0 FROM generate_series(1, %d) g`, rows))
	}
	base := e.serveHTTP()
	bin := buildSluice(t)
	logPath := filepath.Join(e.dir, "sluice.log")

	p := startProcWith(t, bin, logPath, args...)
	waitReady(t, base, time.Minute)
	var updates, deletes, inserts atomic.Int64
	stopWriter := startWriter(t, 5, time.Millisecond, func(rng *rand.Rand) error {
		var err error
		switch r := rng.IntN(10); {
		case textKey && r == 0:
			_, err = conn.Exec(context.Background(), "DELETE FROM items WHERE id = $1", key(1+rng.IntN(rows)))
			deletes.Add(1)
		case textKey && r == 1:
			_, err = conn.Exec(context.Background(), "INSERT INTO items VALUES ($1, 0) ON CONFLICT (id) DO UPDATE SET v = items.v + 1", key(rows+1+rng.IntN(1000)))
			inserts.Add(1)
		default:
			_, err = conn.Exec(context.Background(), "UPDATE items SET v = v + 1 WHERE id = $1", key(1+rng.IntN(rows)))
			updates.Add(1)
		}
		return err
	})
	// Kill once some chunks are stored, long before the end.
	waitChunks(t, e, 20, time.Minute)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()

	p = startProcWith(t, bin, logPath, args...)
	waitReady(t, base, time.Minute)
	waitBackfillDone(t, e, "public.items", 3*time.Minute)
	stopWriter()
	b, _ := os.ReadFile(logPath)
	resumedAt := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "msg=\"resuming backfill\"") {
			i := strings.Index(line, "chunks_done=")
			resumedAt, _ = strconv.Atoi(strings.Fields(line[i+len("chunks_done="):])[0])
		}
	}
	if initial && !strings.Contains(string(b), "reason=initial") {
		t.Errorf("no initial snapshot in the log:\n%s", tailLines(string(b), 30))
	}
	if resumedAt < 20 {
		t.Fatalf("after the kill the backfill resumed at chunk %d, want at least 20 (the chunks stored before the kill)", resumedAt)
	}
	events := assertKeyedViewConverges(t, e.natsURL(), e.cfg.Stream.Name, consumer.TableName{Source: "pg1", Schema: "public", Table: "items"}, state)
	assertNoStaleRead(t, events)
	// Chunk ids count on from where the job was: none after the restart
	// repeats the chunks done before it.
	chunkIDs := map[string]bool{}
	for _, ev := range events {
		if ev.Op == "chunk" {
			chunkIDs[chunkIDOf(t, ev.raw)] = true
		}
	}
	if max := (rows+1000)/249 + 1 + 2; len(chunkIDs) > max {
		t.Errorf("%d chunks published, want at most %d: the restart redid stored chunks", len(chunkIDs), max)
	}
	t.Logf("killed at ≥20 chunks, resumed at chunk %d; %d chunks in all; %d concurrent updates, %d deletes, %d inserts",
		resumedAt, len(chunkIDs), updates.Load(), deletes.Load(), inserts.Load())
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

func chunkIDOf(t *testing.T, raw string) string {
	t.Helper()
	var ev struct {
		Chunk struct {
			ID string `json:"id"`
		} `json:"chunk"`
	}
	if err := json.Unmarshal([]byte(raw), &ev); err != nil {
		t.Fatal(err)
	}
	return ev.Chunk.ID
}

// waitChunks waits until the running sluice's job has stored n chunks.
func waitChunks(t *testing.T, e *env, n int64, timeout time.Duration) {
	t.Helper()
	nc, err := controlClient(e.cfg, e.client).connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	deadline := time.Now().Add(timeout)
	var last any
	for time.Now().Before(deadline) {
		rep, err := backfill.Ask(context.Background(), nc, backfill.JobsSubject(e.cfg.Source.Name), struct{}{})
		last = err
		if err == nil {
			last = rep.Jobs
			for _, j := range rep.Jobs {
				if j.Chunks >= n {
					if j.State != backfill.StateRunning {
						t.Fatalf("backfill finished before it could be killed: %+v", j)
					}
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(e.dir, "sluice.log"))
	t.Fatalf("backfill did not store %d chunks within %s (jobs: %+v); log:\n%s", n, timeout, last, tailLines(string(b), 40))
}

// waitBackfillDone waits until the stored backfill job of table is done,
// failing the test if it fails.
func waitBackfillDone(t *testing.T, e *env, table string, timeout time.Duration) {
	t.Helper()
	nc, err := controlClient(e.cfg, e.client).connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitUntil(t, timeout, "the backfill of "+table+" done", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rep, err := backfill.Ask(ctx, nc, backfill.JobsSubject(e.cfg.Source.Name), struct{}{})
		if err != nil {
			return false
		}
		for _, j := range rep.Jobs {
			if j.Table == table && j.State == backfill.StateFailed {
				t.Fatalf("the backfill of %s failed: %s", table, j.Error)
			}
			if j.Table == table && j.State == backfill.StateDone {
				return true
			}
		}
		return false
	})
}

// startStoreServer starts a stopped sluice's embedded server alone, to
// read its store; the returned func stops it.
func startStoreServer(t *testing.T, e *env) func() {
	t.Helper()
	srv, err := sink.StartServer(sidecar.ServerConfig(e.cfg))
	if err != nil {
		t.Fatal(err)
	}
	return srv.Shutdown
}

// sluice backfill --cancel stops a running backfill: it is stored as
// cancelled and a restart does not resume it. Cancelling what does not run
// says so.
func TestBackfillCancel(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	e.setYAML("backfill: {initial: false}", "backfill: {initial: false, chunk_size: 2}")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)`)
	e.exec(`INSERT INTO items SELECT g, g FROM generate_series(1, 20000) g`)
	e.backfill = []string{"public.items"}
	stop, logs := e.startRun()
	waitChunks(t, e, 1, time.Minute)

	var out strings.Builder
	if err := cancelBackfill(context.Background(), &out, e.cfg, e.client, []string{"public.items"}); err != nil {
		t.Fatalf("--cancel: %v\n%s", err, logs)
	}
	if !strings.Contains(out.String(), "public.items: cancelled") {
		t.Errorf("--cancel printed %q", out.String())
	}
	err := cancelBackfill(context.Background(), &out, e.cfg, e.client, []string{"public.items"})
	mentions(t, err, "no running backfill of public.items")
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	e.backfill = nil
	stop, logs = e.startRun()
	nc, err := controlClient(e.cfg, e.client).connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rep, err := backfill.Ask(context.Background(), nc, backfill.JobsSubject(e.cfg.Source.Name), struct{}{})
	if err != nil || len(rep.Jobs) != 1 || rep.Jobs[0].State != backfill.StateCancelled || rep.Jobs[0].Rows >= 20000 {
		t.Fatalf("jobs after restart: %+v, %v", rep.Jobs, err)
	}
	if strings.Contains(logs.String(), "resuming backfill") {
		t.Error("the cancelled backfill resumed after the restart")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestGapRepairRetriedWhileSourceAway: the slot is lost while sluice runs
// and every connection it holds is cut, the idle backfill connection
// included, as a failover does. Starting the repair fails on that stale
// connection first; sluice retries instead of exiting, records the gap
// once, backfills, and the view equals the table.
func TestGapRepairRetriedWhileSourceAway(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	e.setYAML("backfill: {initial: false}", "backfill: {initial: false, chunk_size: 300}")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)`)
	e.exec(`INSERT INTO items SELECT g, 0 FROM generate_series(1, 2000) g`)
	conn := pgConn(t, pg)
	e.backfill = []string{"public.items"}
	stop, logs := e.startRun()
	e.waitBackfills(1, time.Minute, logs) // the backfill connection is open, idle
	e.backfill = nil

	// Cut every sluice connection and drop the slot before sluice can
	// take it again.
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sluice'`); err != nil {
			t.Fatal(err)
		}
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot('sluice_pg1')`)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("could not drop the slot: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.exec(`UPDATE items SET v = v + 1 WHERE id % 3 = 0`)
	e.exec(`DELETE FROM items WHERE id % 5 = 0`)

	waitGap(t, e, time.Minute)
	e.waitBackfills(2, time.Minute, logs)
	e.exec(`INSERT INTO items SELECT g, 9 FROM generate_series(2001, 2100) g`)
	assertViewConverges(t, e.natsURL(), e.cfg.Stream.Name, consumer.TableName{Source: "pg1", Schema: "public", Table: "items"}, pgState(conn))
	gaps := readGaps(t, e)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(gaps) != 1 || gaps[0].To == "" {
		t.Errorf("gaps %+v, want one, with where streaming resumed", gaps)
	}
	t.Logf("repair retried: %v", strings.Contains(logs.String(), "the gap repair starts once it answers"))
}
