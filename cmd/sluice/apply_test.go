package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// applyEnv is a source database shop and a target database (on the same
// private PostgreSQL, or on a second one), with sluice's NATS taking a read
// login.
type applyEnv struct {
	*env
	pg       *pgtest.Server // the source's
	targetPG *pgtest.Server
	target   *pgx.Conn
	reader   natsClient
}

func newApplyEnv(t testing.TB, tables ...string) *applyEnv {
	t.Helper()
	pg := pgtest.New(t)
	return newApplyEnvOn(t, pg, pg, tables...)
}

func newApplyEnvOn(t testing.TB, pg, targetPG *pgtest.Server, tables ...string) *applyEnv {
	t.Helper()
	a := applyTo(t, newEnv(t, pg, tables...), targetPG)
	a.pg = pg
	return a
}

// applyTo makes e's sluice take a read login and creates database target
// on targetPG.
func applyTo(t testing.TB, e *env, targetPG *pgtest.Server) *applyEnv {
	t.Helper()
	e.setYAML("store_dir:", `users: [{user: reader, password: rd-pw, permissions: read}], store_dir:`)
	if err := targetPG.CreateDatabase(context.Background(), "target"); err != nil {
		t.Fatal(err)
	}
	a := &applyEnv{env: e, targetPG: targetPG, reader: natsClient{URL: e.natsURL(), User: "reader", Password: "rd-pw"}}
	a.connectTarget()
	t.Cleanup(func() {
		if t.Failed() {
			a.logTargetActivity()
		}
	})
	return a
}

// logTargetActivity logs what the target's sessions are doing: on a
// failure, a transaction waiting on a lock shows here.
func (a *applyEnv) logTargetActivity() {
	rows, err := a.targetPG.Query(context.Background(), "target", `SELECT pid, state, coalesce(wait_event_type, ''), coalesce(wait_event, ''),
	coalesce(now() - xact_start, '0'), pg_blocking_pids(pid)::text, left(query, 160) FROM pg_stat_activity WHERE datname = 'target' AND pid <> pg_backend_pid()`)
	if err != nil {
		a.t.Logf("target activity: %v", err)
		return
	}
	for _, r := range rows {
		var cols []string
		for _, v := range r {
			if v != nil {
				cols = append(cols, *v)
			}
		}
		a.t.Logf("target session: %s", strings.Join(cols, " | "))
	}
}

// connectTarget (re)opens the test's connection to the target.
func (a *applyEnv) connectTarget() {
	a.t.Helper()
	target, err := pgx.Connect(context.Background(), a.targetPG.DSN("target"))
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { target.Close(context.Background()) })
	a.target = target
}

// applyMember is an apply member running in-process.
type applyMember struct {
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	metrics *prometheus.Registry
}

// stop stops the member and returns its error.
func (m *applyMember) stop() error {
	m.cancel()
	<-m.done
	return m.err
}

// wait waits for the member to stop by itself and returns its error.
func (m *applyMember) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-m.done:
		return m.err
	case <-time.After(timeout):
		t.Fatalf("apply did not stop within %s", timeout)
		return nil
	}
}

// startApply runs one apply member of group g in-process, stopped with
// the test.
func (a *applyEnv) startApply(member string, create bool) *applyMember {
	a.t.Helper()
	return a.startApplyIn("g", member, create, 100)
}

func (a *applyEnv) startApplyIn(group, member string, create bool, batch int) *applyMember {
	a.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &applyMember{cancel: cancel, done: make(chan struct{}), metrics: prometheus.NewRegistry()}
	go func() {
		defer close(m.done)
		m.err = runApply(ctx, a.reader, "cdc."+a.cfg.Source.Name+".>", applyOptions{To: a.targetPG.DSN("target"), Group: group, Member: member,
			Create: create, Batch: batch, TakeoverAfter: 2 * time.Second, Log: sidecar.LogConfig{Format: "text", Level: "warn"},
			Metrics: m.metrics})
	}()
	a.t.Cleanup(func() { _ = m.stop() })
	return m
}

// rows returns every row of a table as JSON, ordered by id.
func tableJSON(t testing.TB, conn *pgx.Conn, table string) ([]string, error) {
	t.Helper()
	rows, err := conn.Query(context.Background(), fmt.Sprintf(`SELECT to_jsonb(x)::text FROM %s x ORDER BY id`, pgx.Identifier{table}.Sanitize()))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// waitTargetEquals waits until the target's table has the source's rows.
func (a *applyEnv) waitTargetEquals(source *pgx.Conn, table string, timeout time.Duration) {
	a.t.Helper()
	var want, got []string
	var err error
	deadline := time.Now().Add(timeout)
	for {
		if want, err = tableJSON(a.t, source, table); err != nil {
			a.t.Fatal(err)
		}
		got, err = tableJSON(a.t, a.target, table)
		if err == nil && slices.Equal(want, got) {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	missing, extra := 0, 0
	for _, r := range want {
		if !slices.Contains(got, r) {
			missing++
			if missing <= 3 {
				a.t.Logf("source row not in the target: %.300s", r)
			}
		}
	}
	for _, r := range got {
		if !slices.Contains(want, r) {
			extra++
			if extra <= 3 {
				a.t.Logf("target row not in the source: %.300s", r)
			}
		}
	}
	a.t.Fatalf("target %s differs from the source after %s (%v): %d rows, want %d; %d missing or stale, %d extra or stale",
		table, timeout, err, len(got), len(want), missing, extra)
}

// assertAppliedOnce checks the bookkeeping: for each partition, the
// events the target counts as applied equal the messages the stream holds
// on that partition, and the stored position is the partition's last
// message. Any event applied twice, or skipped, breaks the first.
func (a *applyEnv) assertAppliedOnce() {
	a.t.Helper()
	nc, err := nats.Connect(a.natsURL(), nats.UserInfo("reader", "rd-pw"))
	if err != nil {
		a.t.Fatal(err)
	}
	defer nc.Close()
	js, err := a.reader.jetStream(nc)
	if err != nil {
		a.t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), a.cfg.Stream.Name)
	if err != nil {
		a.t.Fatal(err)
	}
	for p := range a.cfg.Stream.Partitions {
		filter := fmt.Sprintf("cdc.%s.*.*.%d", a.cfg.Source.Name, p)
		info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(filter))
		if err != nil {
			a.t.Fatal(err)
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		last, err := s.GetLastMsgForSubject(context.Background(), filter)
		if err != nil {
			a.t.Fatal(err)
		}
		var seq, events uint64
		if err := a.target.QueryRow(context.Background(), `SELECT seq, events FROM sluice.apply_positions WHERE source = $1 AND part = $2`, a.cfg.Source.Name, p).Scan(&seq, &events); err != nil {
			a.t.Fatal(err)
		}
		if events != n || seq != last.Sequence {
			a.t.Errorf("partition %d: applied %d events up to seq %d; the stream holds %d, the last at seq %d", p, events, seq, n, last.Sequence)
		}
	}
}

// sluice apply lands every kind of change in a target PostgreSQL: it
// creates the table from its announced shape, keeps a TOASTed value an
// update left out, follows an added column, applies deletes and a
// truncate, and counts each event once.
func TestApplyTypes(t *testing.T) {
	t.Parallel()
	a := newApplyEnv(t, "public.items")
	a.exec(`CREATE TABLE items (id int PRIMARY KEY, name varchar(20) NOT NULL, amount numeric(10,2), at timestamptz,
		data bytea, doc jsonb, tags text[], flag boolean, u uuid, big text, f float8, d date);
		ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL`)
	stopRun, _ := a.startRun()
	defer func() {
		if err := stopRun(); err != nil {
			t.Error(err)
		}
	}()
	source := pgConn(t, a.pg)
	member := a.startApply("m1", true)
	a.exec(`INSERT INTO items VALUES (1, 'one', 10.50, '2024-05-01 10:00:00+02', '\x00ff10', '{"a": [1, "x"]}', '{a,"b c"}', true,
		'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 625) i), 1.5, '2024-01-31')`)
	a.exec(`INSERT INTO items (id, name) SELECT i, 'n' || i FROM generate_series(2, 300) i`)
	a.exec(`UPDATE items SET amount = 11.25 WHERE id = 1`) // big comes unchanged
	a.exec(`DELETE FROM items WHERE id % 10 = 3`)
	a.exec(`UPDATE items SET name = 'x' || id WHERE id % 7 = 0`)
	a.waitTargetEquals(source, "items", time.Minute)

	a.exec(`ALTER TABLE items ADD COLUMN note text`)
	a.exec(`UPDATE items SET note = 'noted' WHERE id < 50`)
	a.waitTargetEquals(source, "items", time.Minute)

	a.exec(`TRUNCATE items`)
	a.exec(`INSERT INTO items (id, name, note) SELECT i, 'again' || i, 'n' FROM generate_series(1, 40) i`)
	a.waitTargetEquals(source, "items", time.Minute)
	if err := member.stop(); err != nil {
		t.Fatal(err)
	}
	a.assertAppliedOnce()
	var owners int
	if err := a.target.QueryRow(context.Background(), `SELECT count(*) FROM sluice.apply_owners WHERE member = 'm1'`).Scan(&owners); err != nil || owners != a.cfg.Stream.Partitions {
		t.Errorf("apply_owners: %d rows of m1 (%v), want one per partition (%d)", owners, err, a.cfg.Stream.Partitions)
	}

	// The stored positions, not JetStream's acknowledgements, say what is
	// applied: with the group's consumers deleted, the next member gets
	// every event again from the stream's start, and applies none of them.
	ctx := context.Background()
	js := a.eventsAdmin()
	for p := range a.cfg.Stream.Partitions {
		if err := js.DeleteConsumer(ctx, a.cfg.Stream.Name, consumer.GroupConsumerName("g", p)); err != nil {
			t.Fatal(err)
		}
	}
	m2 := a.startApply("m2", true)
	waitUntil(t, time.Minute, "the new member reads every event again", func() bool {
		select {
		case <-m2.done:
			t.Fatalf("the new member stopped: %v", m2.err)
		default:
		}
		for p := range a.cfg.Stream.Partitions {
			info, err := js.Consumer(ctx, a.cfg.Stream.Name, consumer.GroupConsumerName("g", p))
			if err != nil {
				return false
			}
			ci, err := info.Info(ctx)
			if err != nil || ci.NumPending > 0 || ci.NumAckPending > 0 || ci.Delivered.Stream == 0 {
				return false
			}
		}
		return true
	})
	a.waitTargetEquals(source, "items", time.Minute)
	a.assertAppliedOnce()
}

// Without --create, a missing table stops apply with an error naming it
// and the fix; a target table without the source's key is refused too.
func TestApplyRefusesMissingTable(t *testing.T) {
	t.Parallel()
	a := newApplyEnv(t, "public.items")
	a.exec(`CREATE TABLE items (id int PRIMARY KEY, v int)`)
	stopRun, _ := a.startRun()
	defer func() { _ = stopRun() }()
	a.exec(`INSERT INTO items VALUES (1, 1)`)
	err := a.startApply("m1", false).wait(t, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "table public.items does not exist in the target") || !strings.Contains(err.Error(), "--create") {
		t.Fatalf("apply without the table: %v; want an error naming the table and --create", err)
	}
	if _, err := a.target.Exec(context.Background(), `CREATE TABLE items (id int, v int)`); err != nil {
		t.Fatal(err)
	}
	err = a.startApply("m1", false).wait(t, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "no primary key or unique index on (id)") {
		t.Fatalf("apply into a table without the key: %v; want an error naming the key", err)
	}
}

// Three `sluice apply` processes in one group apply a source under load:
// one is killed with SIGKILL, another restarted, and sluice is down while
// rows are deleted and the log is lost, so a backfill's chunk events carry
// the deletes. The target ends equal to the source, and the bookkeeping
// shows every event applied exactly once.
func TestApplyGroupFaults(t *testing.T) {
	t.Parallel()
	a := newApplyEnv(t, "public.items")
	a.setYAML("partitions: 4", "partitions: 8")
	a.setYAML("backfill: {initial: false}", "backfill: {initial: false, chunk_size: 300}")
	a.exec(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)`)
	source := pgConn(t, a.pg)
	db := pgCrashDB{conn: pgConn(t, a.pg)} // the writer's own connection
	stopRun, _ := a.startRun()
	a.exec(`INSERT INTO items VALUES ` + valuesList(1, 3000))

	bin := buildSluice(t)
	metricsPort := natstest.FreePort(t)
	start := func(member string) *proc {
		listen := `--http-listen=`
		if member == "w3" {
			listen = fmt.Sprintf("--http-listen=127.0.0.1:%d", metricsPort)
		}
		return startProcEnv(t, bin, filepath.Join(a.dir, member+".log"), []string{"NATS_PASSWORD=rd-pw"},
			"apply", "--nats", a.natsURL(), "--user", "reader", "--to", a.targetPG.DSN("target"), "--group", "g", "--member", member,
			"--create", "--takeover-after", "2s", "--batch", "200", listen, "cdc."+a.cfg.Source.Name+".>")
	}
	workers := map[string]*proc{"w1": start("w1"), "w2": start("w2"), "w3": start("w3")}
	logs := func() string {
		var b strings.Builder
		for _, m := range []string{"w1", "w2", "w3"} {
			out, _ := os.ReadFile(filepath.Join(a.dir, m+".log"))
			fmt.Fprintf(&b, "--- %s:\n%s\n", m, tailLines(string(out), 15))
		}
		return b.String()
	}
	defer func() {
		if t.Failed() {
			t.Log(logs())
		}
	}()
	members := func(q string) int {
		var n int
		if err := a.target.QueryRow(context.Background(), q).Scan(&n); err != nil {
			return -1
		}
		return n
	}
	stopWriter := startWriter(t, testSeed(t), time.Millisecond, func(rng *rand.Rand) error {
		id := 1 + rng.IntN(4000)
		switch rng.IntN(4) {
		case 0:
			return db.tx([]string{fmt.Sprintf("DELETE FROM items WHERE id = %d", id)})
		case 1:
			return db.tx([]string{fmt.Sprintf("INSERT INTO items VALUES (%d, 1) ON CONFLICT (id) DO UPDATE SET v = items.v + 1", id)})
		default:
			return db.tx([]string{fmt.Sprintf("UPDATE items SET v = v + 1 WHERE id = %d", id)})
		}
	})
	waitUntil(t, time.Minute, "all three members apply partitions",
		func() bool {
			return members(`SELECT count(DISTINCT member) FROM sluice.apply_positions WHERE member <> ''`) == 3
		})

	// SIGKILL one member: its partitions move to the others.
	if err := workers["w1"].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = workers["w1"].cmd.Wait()
	waitUntil(t, time.Minute, "the killed member's partitions are taken over",
		func() bool { return members(`SELECT count(*) FROM sluice.apply_positions WHERE member = 'w1'`) == 0 })

	// Restart another one.
	if err := workers["w2"].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := workers["w2"].cmd.Wait(); err != nil {
		t.Fatalf("w2 did not stop cleanly on SIGTERM: %v", err)
	}
	var restarted time.Time
	if err := a.target.QueryRow(context.Background(), `SELECT now()`).Scan(&restarted); err != nil {
		t.Fatal(err)
	}
	workers["w2"] = start("w2")
	waitUntil(t, time.Minute, "the restarted member applies partitions again", func() bool {
		var n int
		err := a.target.QueryRow(context.Background(), `SELECT count(*) FROM sluice.apply_positions WHERE member = 'w2' AND updated_at > $1`, restarted).Scan(&n)
		return err == nil && n > 0
	})

	// The outage: sluice stops, rows go, the log goes.
	if err := stopRun(); err != nil {
		t.Fatal(err)
	}
	a.exec(`DELETE FROM items WHERE id % 11 = 0 OR id BETWEEN 1 AND 350`)
	a.exec(`UPDATE items SET v = v + 100 WHERE id % 7 = 0`)
	if _, err := source.Exec(context.Background(), `SELECT pg_drop_replication_slot('sluice_pg1')`); err != nil {
		t.Fatal(err)
	}
	_, runLogs := a.startRun()
	a.waitBackfills(1, 2*time.Minute, runLogs)
	stopWriter()
	a.waitTargetEquals(source, "items", 2*time.Minute)

	// The members report what they apply.
	_, body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	for _, want := range []string{"sluice_apply_events_total{", "sluice_apply_lag_seconds{", "sluice_apply_pending{", "sluice_apply_partitions_owned{"} {
		if !strings.Contains(body, want) {
			t.Errorf("w3's /metrics has no %s", want)
		}
	}
	for _, m := range []string{"w2", "w3"} {
		if err := workers[m].cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := workers[m].cmd.Wait(); err != nil {
			t.Errorf("%s did not stop cleanly on SIGTERM: %v", m, err)
		}
	}
	a.assertAppliedOnce()

	// Owner changes, per partition: each a handover, none back and forth
	// on every batch.
	rows, err := a.target.Query(context.Background(), `SELECT part, string_agg(member || '@' || from_seq, ' ' ORDER BY from_seq) FROM sluice.apply_owners GROUP BY part ORDER BY part`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p int
		var owners string
		if err := rows.Scan(&p, &owners); err != nil {
			t.Fatal(err)
		}
		t.Logf("partition %d owners: %s", p, owners)
		if n := len(strings.Fields(owners)); n > 10 {
			t.Errorf("partition %d changed owner %d times: %s", p, n, owners)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	chunks := members(`SELECT count(*) FROM sluice.apply_chunk_keys`)
	if chunks != 0 {
		t.Errorf("%d keys of backfill chunks are still recorded after their chunk events", chunks)
	}
}

// counter sums a counter of the member's metrics over its labels.
func (m *applyMember) counter(t *testing.T, name string) float64 {
	t.Helper()
	families, err := m.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() == name {
			for _, mm := range f.GetMetric() {
				sum += mm.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// The target database goes down while apply is in the middle of a
// backlog and comes back: the batches that fail meanwhile are tried
// again, and the target ends equal to the source with every event
// applied once.
func TestApplyTargetRestart(t *testing.T) {
	t.Parallel()
	a := newApplyEnvOn(t, pgtest.New(t), pgtest.New(t), "public.items")
	a.exec(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)`)
	stopRun, _ := a.startRun()
	defer func() { _ = stopRun() }()
	member := a.startApply("m1", true)
	for from := 1; from <= 20000; from += 1000 {
		a.exec(`INSERT INTO items VALUES ` + valuesList(from, from+999))
	}
	waitUntil(t, time.Minute, "apply starts on the backlog", func() bool { return member.counter(t, "sluice_apply_events_total") > 0 })
	// The target is down while events keep coming: batches fail, and are
	// tried again until it is back.
	a.target.Close(context.Background())
	if err := a.targetPG.Halt(); err != nil {
		t.Fatal(err)
	}
	a.exec(`UPDATE items SET v = 1 WHERE id % 3 = 0`)
	waitUntil(t, time.Minute, "a batch fails while the target is down", func() bool { return member.counter(t, "sluice_apply_retries_total") > 0 })
	if err := a.targetPG.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.connectTarget()
	a.exec(`DELETE FROM items WHERE id % 5 = 0`)
	a.waitTargetEquals(pgConn(t, a.pg), "items", 2*time.Minute)
	if err := member.stop(); err != nil {
		t.Fatal(err)
	}
	a.assertAppliedOnce()
}

// Hostile table and column names, and values that look like SQL, reach
// the target as themselves: identifiers are quoted, values bound.
func TestApplyHostileNames(t *testing.T) {
	t.Parallel()
	a := newApplyEnv(t, "public.*")
	a.exec(`CREATE TABLE items (id int PRIMARY KEY, v text);
		CREATE TABLE "a""b'c;d" (id int PRIMARY KEY, "x""); DROP TABLE items; --" text)`)
	stopRun, _ := a.startRun()
	defer func() { _ = stopRun() }()
	a.startApply("m1", true)
	a.exec(`INSERT INTO items VALUES (1, '''); DROP TABLE items; --'), (2, '"; DROP TABLE items; --')`)
	a.exec(`INSERT INTO "a""b'c;d" VALUES (1, '''); DROP TABLE items; --')`)
	source := pgConn(t, a.pg)
	a.waitTargetEquals(source, "items", time.Minute)
	a.waitTargetEquals(source, `a"b'c;d`, time.Minute)
}

// rowQuerier reads rows as text: pgtest.Server and mysqltest.Server.
type rowQuerier interface {
	Query(ctx context.Context, db, sql string, args ...any) ([][]*string, error)
}

// sortedRows returns a query's rows as sorted lines, NULL as \N.
func sortedRows(q rowQuerier, db, sql string) ([]string, error) {
	rows, err := q.Query(context.Background(), db, sql)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		vals := make([]string, len(r))
		for j, v := range r {
			vals[j] = `\N`
			if v != nil {
				vals[j] = *v
			}
		}
		out[i] = strings.Join(vals, "|")
	}
	slices.Sort(out)
	return out, nil
}

// Each kind of source lands in PostgreSQL: a table with an integer key
// and one with a composite text and integer key, whose backfill chunks
// (after the log is lost with rows deleted) are compared bytewise.
func TestApplyEachSource(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, db database) {
		e, conn := db.start(t, "items", "orders")
		var src rowQuerier
		switch d := conn.(type) {
		case pgTestDB:
			src = d.pg
		case mysqlTestDB:
			src = d.my
		}
		a := applyTo(t, e, pgtest.New(t))
		a.setYAML("backfill: {initial: false}", "backfill: {initial: false, chunk_size: 40}")
		a.exec(`CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL)`)
		a.exec(`CREATE TABLE orders (region VARCHAR(8), id INT, qty INT, PRIMARY KEY (region, id))`)
		stopRun, _ := a.startRun()
		a.startApply("m1", true)
		a.exec(`INSERT INTO items VALUES ` + valuesList(1, 500))
		var orders []string
		for i, region := range []string{"eu", "EU", "us", "ap", "a", "éu"} {
			for id := 1; id <= 50; id++ {
				orders = append(orders, fmt.Sprintf("('%s', %d, %d)", region, id, i))
			}
		}
		a.exec(`INSERT INTO orders VALUES ` + strings.Join(orders, ", "))
		a.exec(`UPDATE items SET v = v + 1 WHERE id % 3 = 0`)
		a.exec(`DELETE FROM orders WHERE id % 9 = 0`)
		converged := func() {
			t.Helper()
			for _, q := range []string{"SELECT id, v FROM %sitems", "SELECT region, id, qty FROM %sorders"} {
				var want, got []string
				var err error
				waitUntil(t, 2*time.Minute, "the target equals the source: "+q, func() bool {
					if want, err = sortedRows(src, "shop", fmt.Sprintf(q, "")); err != nil {
						t.Fatal(err)
					}
					got, err = sortedRows(a.targetPG, "target", fmt.Sprintf(q, db.schema+"."))
					return err == nil && slices.Equal(want, got)
				})
			}
		}
		converged()

		// The outage: rows go while nobody streams, then the log goes.
		if err := stopRun(); err != nil {
			t.Fatal(err)
		}
		a.exec(`DELETE FROM items WHERE id % 11 = 0 OR id > 450`)
		a.exec(`DELETE FROM orders WHERE region = 'EU' OR id % 7 = 0`)
		a.exec(`UPDATE orders SET qty = 99 WHERE id = 5`)
		if err := conn.loseLog(context.Background()); err != nil {
			t.Fatal(err)
		}
		_, logs := a.startRun()
		a.waitBackfills(2, 2*time.Minute, logs)
		converged()
		a.assertAppliedOnce()
	})
}

// A target password in --to is warned about, in every way a connection
// string can carry one.
func TestPasswordIn(t *testing.T) {
	for dsn, want := range map[string]bool{
		"postgres://app:secret@replica/shop":          true,
		"postgres://app@replica/shop?password=secret": true,
		"host=replica user=app password=secret":       true,
		"postgres://app@replica/shop":                 false,
		"host=replica user=app dbname=shop":           false,
	} {
		if got := passwordIn(dsn); got != want {
			t.Errorf("passwordIn(%q) = %v, want %v", dsn, got, want)
		}
	}
}
