package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// execer runs SQL in a database: pgtest.Server and mysqltest.Server both do.
type execer interface {
	Exec(ctx context.Context, db, sql string, args ...any) error
}

// env is one test's real world: a private database and a sluice config
// whose embedded NATS listens on a free port.
type env struct {
	t      testing.TB
	db     execer
	dir    string
	cfg    sidecar.Config
	cfgYML string
	// finished closes when the run started last returns by itself or is stopped.
	finished <-chan struct{}
	// client, when its URL is set, is how the test logs in to NATS.
	client natsClient
	// backfill is run's --backfill.
	backfill []string
	// metrics are the metrics of the run started last.
	metrics *prometheus.Registry
}

// newEnv prepares database shop on a private PostgreSQL.
func newEnv(t testing.TB, pg *pgtest.Server, tables ...string) *env {
	t.Helper()
	if err := pg.CreateDatabase(context.Background(), "shop"); err != nil {
		t.Fatal(err)
	}
	return newEnvFor(t, "postgres", pg.DSN("shop"), pg, tables)
}

// newMySQLEnv prepares database shop on a private MariaDB.
func newMySQLEnv(t *testing.T, my *mysqltest.Server, tables ...string) *env {
	t.Helper()
	if err := my.CreateDatabase(context.Background(), "shop"); err != nil {
		t.Fatal(err)
	}
	return newEnvFor(t, "mysql", my.DSN("shop"), my, tables)
}

func newEnvFor(t testing.TB, kind, dsn string, db execer, tables []string) *env {
	t.Helper()
	dir := t.TempDir()
	name := map[string]string{"postgres": "pg1", "mysql": "my1"}[kind]
	yml := fmt.Sprintf(`source: {name: %s, kind: %s, dsn: %q, tables: [%s]}
nats:   {listen: "127.0.0.1:%d", store_dir: %q}
stream: {subject_prefix: cdc, partitions: 4, replicas: 1}
backfill: {initial: false}
`, name, kind, dsn, strings.Join(tables, ", "), natstest.FreePort(t), filepath.Join(dir, "nats"))
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := sidecar.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, db: db, dir: dir, cfg: cfg, cfgYML: path}
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if err := e.db.Exec(context.Background(), "shop", sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// setYAML edits the config file the binary reads, and e.cfg with it.
func (e *env) setYAML(old, new string) {
	e.t.Helper()
	b, err := os.ReadFile(e.cfgYML)
	if err != nil {
		e.t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		e.t.Fatalf("config has no %q", old)
	}
	if err := os.WriteFile(e.cfgYML, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if e.cfg, err = sidecar.LoadConfig(e.cfgYML); err != nil {
		e.t.Fatal(err)
	}
}

// readCheckpointPosition reads the source's checkpoint from the stopped
// sluice's store by starting its embedded server alone.
func readCheckpointPosition(t *testing.T, e *env) string {
	t.Helper()
	cp, ok, _ := readStopped(t, e)
	if !ok {
		t.Fatal("no checkpoint")
	}
	return string(cp.Position)
}

// readStopped reads the source's checkpoint (ok is false when there is
// none) and the stream's last sequence from the stopped sluice's store by
// starting its embedded server alone.
func readStopped(t *testing.T, e *env) (cp checkpoint.Checkpoint, ok bool, lastSeq uint64) {
	t.Helper()
	srv, err := sink.StartServer(sidecar.ServerConfig(e.cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.ConnectControl("reader")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p, err := newProgress(nc, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cp, ok, lastSeq, err = p.read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cp, ok, lastSeq
}

// progress reads how far a sluice has got: its checkpoint, and its
// stream's last sequence.
type progress struct {
	nc     *nats.Conn
	store  *checkpoint.Store
	events jetstream.JetStream
	source string
	stream string
}

// newProgress reads through nc, an admin connection to sluice's NATS.
func newProgress(nc *nats.Conn, cfg sidecar.Config) (*progress, error) {
	state, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	events, err := jetstream.NewWithAPIPrefix(nc, sink.EventsAPIPrefix)
	if err != nil {
		return nil, err
	}
	store, err := checkpoint.Open(context.Background(), state, cfg.Checkpoint.Bucket, 1)
	if err != nil {
		return nil, err
	}
	return &progress{nc: nc, store: store, events: events, source: cfg.Source.Name, stream: cfg.Stream.Name}, nil
}

// close closes the connection: before sluice is killed, so that it does
// not try the old login on the next sluice.
func (p *progress) close() { p.nc.Close() }

// read returns the checkpoint (ok is false while there is none) and the
// stream's last sequence.
func (p *progress) read(ctx context.Context) (cp checkpoint.Checkpoint, ok bool, lastSeq uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cp, ok, err = p.store.Load(ctx, p.source)
	if err != nil {
		return cp, ok, 0, err
	}
	s, err := p.events.Stream(ctx, p.stream)
	if err != nil {
		return cp, ok, 0, err
	}
	return cp, ok, s.CachedInfo().State.LastSeq, nil
}

// progress connects to the running sluice with the local admin login (a
// restarted sluice writes a new one: call it again after each start).
func (e *env) progress() *progress {
	e.t.Helper()
	nc, err := controlClient(e.cfg, e.client).connect("test")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	p, err := newProgress(nc, e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// waitCheckpointed waits until the running sluice's checkpoint covers its
// whole stream (stream_seq is the stream's last sequence): every message
// it has published is stored and acknowledged, so a duplicate or a stray
// event of what the database committed so far would already be in the
// stream. It returns the stream's last sequence.
func (e *env) waitCheckpointed(timeout time.Duration) uint64 {
	e.t.Helper()
	p := e.progress()
	deadline := time.Now().Add(timeout)
	for {
		cp, ok, last, err := p.read(context.Background())
		if err == nil && ok && cp.StreamSeq == last {
			return last
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the checkpoint (stream_seq %d, found %v, error %v) did not reach the stream's last sequence %d within %s",
				cp.StreamSeq, ok, err, last, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serveHTTP gives e's sluice an HTTP port (/readyz, /metrics) and returns
// its base URL.
func (e *env) serveHTTP() string {
	e.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(e.t))
	e.setYAML("\nstream: {", fmt.Sprintf("\nhttp: {listen: %q}\nstream: {", addr))
	return "http://" + addr
}

// waitReady waits until the sluice serving base says it is ready: its
// source has the log open and JetStream answers.
func waitReady(t testing.TB, base string, timeout time.Duration) {
	t.Helper()
	waitHTTP(t, base+"/readyz", timeout, "readiness", func(code int, _ string) bool { return code == 200 })
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testSeed is the seed of a test's randomness: SLUICE_TEST_SEED, or the
// time. It is logged, so that a failure can be run again with it.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SLUICE_TEST_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SLUICE_TEST_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (SLUICE_TEST_SEED=%d runs it again)", seed, seed)
	return seed
}

func (e *env) natsURL() string { return "nats://" + e.cfg.NATS.Listen }

// logBuffer captures sluice's log lines for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRun runs sluice in-process until the returned stop is called; stop
// returns run's error.
func (e *env) startRun() (stop func() error, logs *logBuffer) {
	e.t.Helper()
	logs = &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	var runErr error
	e.metrics = prometheus.NewRegistry()
	opts := sidecar.Options{Backfill: e.backfill, Metrics: e.metrics}
	go func() { runErr = sidecar.Run(ctx, e.cfg, log, opts); close(finished) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case <-finished:
				err = runErr
			case <-time.After(60 * time.Second):
				err = fmt.Errorf("run did not stop within 60s; log:\n%s", logs)
			}
		})
		return err
	}
	e.finished = finished
	e.t.Cleanup(func() { _ = stop() })
	e.waitStream(finished, logs)
	return stop, logs
}

// eventsAdmin is the JetStream of the event streams as the local admin
// login sees it (under sink.EventsAPIPrefix), closed with the test.
func (e *env) eventsAdmin() jetstream.JetStream {
	e.t.Helper()
	nc, err := controlClient(e.cfg, e.client).connect("test")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.NewWithAPIPrefix(nc, sink.EventsAPIPrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	return js
}

// waitLog waits until sluice's log shows text, failing the test if sluice
// exits first: an incident it must ride out.
func (e *env) waitLog(logs *logBuffer, text string, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(logs.String(), text) {
		select {
		case <-e.finished:
			e.t.Fatalf("sluice exited before its log showed %q:\n%s", text, tailLines(logs.String(), 30))
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("sluice's log did not show %q within %s:\n%s", text, timeout, tailLines(logs.String(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStream waits until the run started last streams: its source has
// the log open (sluice_source_open), so its stream and checkpoint bucket
// exist too.
func (e *env) waitStream(finished <-chan struct{}, logs fmt.Stringer) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for e.gauge("sluice_source_open") != 1 {
		select {
		case <-finished:
			e.t.Fatalf("sluice stopped early; log:\n%s", logs)
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("sluice did not start streaming within 60s; log:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counter sums a counter of the run started last over its series whose
// label has the value value.
func (e *env) counter(name, label, value string) float64 {
	e.t.Helper()
	families, err := e.metrics.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// gauge reads a gauge of the run started last; -1 when it has none yet.
func (e *env) gauge(name string) float64 {
	e.t.Helper()
	families, err := e.metrics.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// event is a decoded change event with its message's metadata.
type event struct {
	Op            string                     `json:"op"`
	Key           map[string]json.RawMessage `json:"key"`
	Before        map[string]json.RawMessage `json:"before"`
	After         map[string]json.RawMessage `json:"after"`
	Unchanged     []string                   `json:"unchanged"`
	SchemaVersion int                        `json:"schema_version"`
	Source        struct {
		Name     string `json:"name"`
		Kind     string `json:"kind"`
		DB       string `json:"db"`
		Schema   string `json:"schema"`
		Table    string `json:"table"`
		Pos      string `json:"pos"`
		TxID     uint64 `json:"txid"`
		TsMs     int64  `json:"ts_ms"`
		Snapshot bool   `json:"snapshot"`
	} `json:"source"`
	TsMs int64 `json:"ts_ms"`

	subject string
	msgID   string
	seq     uint64
	raw     string
}

// readEvents reads the stream from the start until it has n messages (or
// fails the test after timeout).
func readEvents(t *testing.T, url, stream string, n int, timeout time.Duration) []event {
	t.Helper()
	return readStream(t, url, stream, n, timeout, func(event) bool { return true })
}

// readRows reads the stream from the start until it has n messages that
// are not schema-change events, and returns those: for a test about rows,
// which every table's schema-change events (its first shape's too) come
// between. It checks what it skips: each event's shape version of its
// table was announced on the table's _schema subject before it.
func readRows(t *testing.T, url, stream string, n int, timeout time.Duration) []event {
	t.Helper()
	all := readStream(t, url, stream, n, timeout, isRow)
	assertAnnounced(t, all)
	rows := make([]event, 0, n)
	for _, ev := range all {
		if isRow(ev) {
			rows = append(rows, ev)
		}
	}
	return rows
}

// isRow tells a message that is not a schema-change event.
func isRow(ev event) bool { return ev.Op != "schema" }

// assertAnnounced checks that every event in events, read from the start
// of the stream, carries a shape version its table's schema-change events
// announced before it, starting from the first (version 0 → 1), each on
// the table's _schema subject, from the version announced before.
func assertAnnounced(t testing.TB, events []event) {
	t.Helper()
	last := map[string]int{} // schema.table → version announced last
	for _, ev := range events {
		table := ev.Source.Schema + "." + ev.Source.Table
		switch {
		case strings.HasSuffix(ev.subject, "._dlq"):
			// A dead letter is no event of a table's shape: it holds
			// one, or says why one was kept back.
		case ev.Op == "schema":
			var body struct {
				Schema struct{ Old, New struct{ Version int } } `json:"schema"`
			}
			if err := json.Unmarshal([]byte(ev.raw), &body); err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(ev.subject, "."+table+"._schema") || body.Schema.Old.Version != last[table] ||
				body.Schema.New.Version != last[table]+1 || ev.SchemaVersion != body.Schema.New.Version {
				t.Fatalf("schema-change event on %s after version %d of %s was announced: %s", ev.subject, last[table], table, ev.raw)
			}
			last[table] = body.Schema.New.Version
		default:
			if ev.SchemaVersion < 1 || ev.SchemaVersion > last[table] {
				t.Fatalf("an event of %s version %d, announced up to version %d: %s", table, ev.SchemaVersion, last[table], ev.raw)
			}
		}
	}
}

// readStream reads the stream from the start until n of its messages are
// counted (or fails the test after timeout), and returns every message
// read.
func readStream(t *testing.T, url, stream string, n int, timeout time.Duration, counted func(event) bool) []event {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	defer nc.Close()
	js, err := natsClient{}.jetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var events []event
	for got := 0; got < n; {
		batch, err := c.Fetch(min(n-got, 1000), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			ev := decodeEvent(t, m)
			events = append(events, ev)
			if counted(ev) {
				got++
			}
		}
		if got < n && ctx.Err() != nil {
			t.Fatalf("got %d events, want %d, within %s", got, n, timeout)
		}
	}
	return events
}

// decodeEvent reads a message as an event, with its metadata.
func decodeEvent(t testing.TB, m jetstream.Msg) event {
	t.Helper()
	var e event
	if err := json.Unmarshal(m.Data(), &e); err != nil {
		t.Fatalf("message %s is not an event: %v: %s", m.Subject(), err, m.Data())
	}
	md, _ := m.Metadata()
	e.subject, e.msgID, e.seq, e.raw = m.Subject(), m.Headers().Get(jetstream.MsgIDHeader), md.Sequence.Stream, string(m.Data())
	return e
}

// startWriter runs op in a loop, pause apart, until the returned stop is
// called; stop fails the test if op failed.
func startWriter(t testing.TB, seed uint64, pause time.Duration, op func(rng *rand.Rand) error) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(seed, seed+1))
		for {
			select {
			case <-done:
				result <- nil
				return
			default:
			}
			if err := op(rng); err != nil {
				result <- err
				return
			}
			time.Sleep(pause) // the workload's pace, not a wait
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(done)
			if err := <-result; err != nil {
				t.Errorf("writer: %v", err)
			}
		})
	}
	// A test that fails early still stops its writer before the writer's
	// connection is closed.
	t.Cleanup(stop)
	return stop
}

// streamCount returns how many messages the stream holds.
func streamCount(t *testing.T, url, stream string) uint64 {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := natsClient{}.jetStream(nc)
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// pgConn opens a connection to database shop, closed with the test.
func pgConn(t testing.TB, pg *pgtest.Server) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), pg.DSN("shop"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// mysqlConn opens a connection to database shop as root, closed with the test.
func mysqlConn(t *testing.T, my *mysqltest.Server) *client.Conn {
	t.Helper()
	conn, err := client.Connect(my.Addr(), "root", "", "shop")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
