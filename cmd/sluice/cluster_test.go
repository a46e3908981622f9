package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// clusterEnv is a 3-member NATS cluster whose first member is the embedded
// server of a `sluice run` process capturing a real PostgreSQL; the other
// two run in the test.
type clusterEnv struct {
	*env
	plan    *natstest.Plan
	bin     string
	logPath string
	base    string // sluice's HTTP port
	proc    *proc
}

func newClusterEnv(t *testing.T) *clusterEnv {
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note text)`)
	plan := natstest.PlanCluster(t, 3)
	m := plan.Member(0)
	yml := fmt.Sprintf(`source: {name: pg1, kind: postgres, dsn: %q, tables: [public.items]}
nats:
  server_name: %s
  listen: %q
  store_dir: %q
  cluster: {name: %s, listen: %q, routes: [%s], user: %s, password: %s}
  users: [{user: %s, password: %s, permissions: admin}]
stream: {subject_prefix: cdc, partitions: 4, replicas: 3, duplicate_window: 100ms}
backfill: {initial: false}
`, pg.DSN("shop"), m.Name, m.Listen, m.StoreDir, plan.Name, m.Cluster.Listen, strings.Join(plan.Routes(), ", "),
		natstest.RouteUser, natstest.RoutePassword, natstest.Admin.User, natstest.Admin.Password)
	if err := os.WriteFile(e.cfgYML, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.cfg, err = sidecar.LoadConfig(e.cfgYML); err != nil {
		t.Fatal(err)
	}
	c := &clusterEnv{env: e, plan: plan, bin: buildSluice(t), logPath: filepath.Join(e.dir, "sluice.log"), base: e.serveHTTP()}
	plan.Start(1)
	plan.Start(2)
	c.startSluice()
	return c
}

func (c *clusterEnv) startSluice() {
	c.t.Helper()
	c.proc = startProc(c.t, c.bin, c.cfgYML, c.logPath)
	waitReady(c.t, c.base, 2*time.Minute)
}

func (c *clusterEnv) killSluice() {
	c.t.Helper()
	if err := c.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	_ = c.proc.cmd.Wait()
}

// startTxWriter inserts and updates rows until stopped, in small
// transactions.
func startTxWriter(t *testing.T, db crashDB) (stop func()) {
	next := 1
	return startWriter(t, 3, 0, func(rng *rand.Rand) error {
		n := 1 + rng.IntN(5)
		vals := make([]string, n)
		for i := range n {
			vals[i] = fmt.Sprintf("(%d, 0, 'row')", next+i)
		}
		stmts := []string{"INSERT INTO items VALUES " + strings.Join(vals, ",")}
		next += n
		for range rng.IntN(3) {
			stmts = append(stmts, fmt.Sprintf("UPDATE items SET v = v + 1 WHERE id = %d", 1+rng.IntN(next-1)))
		}
		time.Sleep(time.Duration(1+rng.IntN(4)) * time.Millisecond) // workload: a few ms apart
		return db.tx(stmts)
	})
}

// The stream's leader is lost twice while rows are written: first an
// in-test member (sluice rides through the election), then sluice's own
// member, killed with SIGKILL together with sluice. Each comes back. The
// consumer's view equals the table, nothing lost, nothing delivered twice,
// and the checkpoint survived.
func TestClusterLeaderLoss(t *testing.T) {
	t.Parallel()
	c := newClusterEnv(t)
	nc := c.plan.Connect()
	js, err := jetstream.NewWithAPIPrefix(nc, sink.EventsAPIPrefix)
	if err != nil {
		t.Fatal(err)
	}
	stopWriter := startTxWriter(t, pgCrashDB{pgConn(t, c.pg())})
	p, err := newProgress(nc, c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.waitGrowth(p, 300)

	leader := natstest.MoveLeader(t, nc, js, c.cfg.Stream.Name, "n2", "n3")
	t.Logf("stopping the stream leader %s", leader)
	victim := c.plan.ServerNamed(leader)
	victim.Stop()
	c.waitGrowth(p, 300)
	victim.Start()
	waitCurrent(t, js, c.cfg.Stream.Name, victim.Name())

	natstest.MoveLeader(t, nc, js, c.cfg.Stream.Name, "n1")
	t.Log("SIGKILL sluice, whose embedded server n1 leads the stream")
	c.killSluice()
	c.waitRows(200)
	c.startSluice()
	c.waitGrowth(p, 300)

	stopWriter()
	assertConverged(t, adminURLs(c.plan), c.cfg.Stream.Name, pgCrashDB{pgConn(t, c.pg())})
	c.assertCheckpointSurvived(js)
	b, _ := os.ReadFile(c.logPath)
	if !strings.Contains(string(b), "resuming from checkpoint") {
		t.Errorf("the restarted sluice did not resume from its checkpoint:\n%s", tailLines(string(b), 40))
	}
}

// A member that does not lead the stream is lost, first an in-test one,
// then sluice's own (SIGKILL); writing goes on and nothing is lost.
func TestClusterFollowerLoss(t *testing.T) {
	t.Parallel()
	c := newClusterEnv(t)
	nc := c.plan.Connect()
	js, err := jetstream.NewWithAPIPrefix(nc, sink.EventsAPIPrefix)
	if err != nil {
		t.Fatal(err)
	}
	stopWriter := startTxWriter(t, pgCrashDB{pgConn(t, c.pg())})
	p, err := newProgress(nc, c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.waitGrowth(p, 300)

	leader := natstest.MoveLeader(t, nc, js, c.cfg.Stream.Name, "n1", "n2")
	follower := map[string]string{"n1": "n3", "n2": "n3"}[leader]
	t.Logf("stopping follower %s (leader %s)", follower, leader)
	victim := c.plan.ServerNamed(follower)
	victim.Stop()
	c.waitGrowth(p, 300)
	victim.Start()
	waitCurrent(t, js, c.cfg.Stream.Name, victim.Name())

	natstest.MoveLeader(t, nc, js, c.cfg.Stream.Name, "n2", "n3")
	t.Log("SIGKILL sluice, whose embedded server n1 follows")
	c.killSluice()
	c.waitRows(200)
	c.startSluice()
	c.waitGrowth(p, 300)

	stopWriter()
	assertConverged(t, adminURLs(c.plan), c.cfg.Stream.Name, pgCrashDB{pgConn(t, c.pg())})
	c.assertCheckpointSurvived(js)
}

func (c *clusterEnv) pg() *pgtest.Server { return c.db.(*pgtest.Server) }

// waitGrowth waits until sluice has published n more messages and written
// a checkpoint past the stream's last sequence of when it was called: its
// own checkpoint loop keeps working through whatever the test has done to
// the cluster.
func (c *clusterEnv) waitGrowth(p *progress, n uint64) {
	c.t.Helper()
	var from uint64
	waitUntil(c.t, 2*time.Minute, "the stream's last sequence", func() bool {
		_, _, last, err := p.read(context.Background())
		from = last
		return err == nil && last > 0
	})
	waitUntil(c.t, 2*time.Minute, fmt.Sprintf("%d more messages and a checkpoint past stream sequence %d", n, from), func() bool {
		cp, ok, last, err := p.read(context.Background())
		return err == nil && ok && last >= from+n && cp.StreamSeq > from
	})
}

// waitRows waits until the table has n more rows: the writer goes on while
// sluice is down.
func (c *clusterEnv) waitRows(n int) {
	c.t.Helper()
	conn := pgConn(c.t, c.pg())
	count := func() int {
		var rows int
		if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM items").Scan(&rows); err != nil {
			c.t.Fatal(err)
		}
		return rows
	}
	from := count()
	waitUntil(c.t, time.Minute, fmt.Sprintf("%d more rows", n), func() bool { return count() >= from+n })
}

// waitCurrent waits until member is a current replica of the stream again.
func waitCurrent(t *testing.T, js jetstream.JetStream, stream, member string) {
	t.Helper()
	waitUntil(t, 2*time.Minute, member+" current in stream "+stream, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil || s.CachedInfo().Cluster == nil {
			return false
		}
		cl := s.CachedInfo().Cluster
		if cl.Leader == member {
			return true
		}
		for _, r := range cl.Replicas {
			if r.Name == member {
				return r.Current && !r.Offline
			}
		}
		return false
	})
}

// adminURLs are the cluster's client URLs with the admin login in each.
func adminURLs(p *natstest.Plan) string {
	var urls []string
	for _, u := range strings.Split(p.URLs(), ",") {
		urls = append(urls, strings.Replace(u, "nats://", "nats://"+natstest.Admin.User+":"+natstest.Admin.Password+"@", 1))
	}
	return strings.Join(urls, ",")
}

// assertCheckpointSurvived reads the checkpoint through the cluster: it
// must exist with three replicas and point inside the stream (js reaches
// the stream, as an admin does, under sink.EventsAPIPrefix).
func (c *clusterEnv) assertCheckpointSurvived(js jetstream.JetStream) {
	c.t.Helper()
	ctx := context.Background()
	stateJS, err := jetstream.New(js.Conn())
	if err != nil {
		c.t.Fatal(err)
	}
	store, err := checkpoint.Open(ctx, stateJS, c.cfg.Checkpoint.Bucket, 3)
	if err != nil {
		c.t.Fatal(err)
	}
	cp, ok, err := store.Load(ctx, "pg1")
	if err != nil || !ok {
		c.t.Fatalf("checkpoint lost: %v", err)
	}
	kv, err := stateJS.KeyValue(ctx, c.cfg.Checkpoint.Bucket)
	if err != nil {
		c.t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	if r := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; r != 3 {
		c.t.Errorf("checkpoint bucket has %d replicas, want 3", r)
	}
	s, err := js.Stream(ctx, c.cfg.Stream.Name)
	if err != nil {
		c.t.Fatal(err)
	}
	if last := s.CachedInfo().State.LastSeq; cp.StreamSeq == 0 || cp.StreamSeq > last {
		c.t.Errorf("checkpoint stream_seq %d, stream last seq %d", cp.StreamSeq, last)
	}
	c.t.Logf("checkpoint %s at stream seq %d survived", cp.Position, cp.StreamSeq)
}

// A member whose peers never show up gives up after nats.startup_timeout
// with an error that says what to check, instead of hanging.
func TestClusterStartupTimeout(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	plan := natstest.PlanCluster(t, 3) // members 2 and 3 are never started
	m := plan.Member(0)
	e.cfg.NATS.ServerName = m.Name
	e.cfg.NATS.Listen = m.Listen
	e.cfg.NATS.Cluster = &sidecar.ClusterConfig{Name: plan.Name, Listen: m.Cluster.Listen, Routes: plan.Routes(), User: natstest.RouteUser, Password: natstest.RoutePassword}
	e.cfg.NATS.StartupTimeout = 3 * time.Second
	e.cfg.Stream.Replicas = 3
	start := time.Now()
	err, _ := runErr(t, e.cfg)
	if err == nil {
		t.Fatal("sluice started without its cluster")
	}
	mentions(t, err, "JetStream did not answer within 3s", "nats.cluster.routes")
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

// TestFirstStartWhileClusterForms: sluice fixes its capture point before
// it waits for anything. It starts as one member of a 3-node cluster whose
// other members come up later; a transaction committed right after the
// "capturing from" line, long before the stream exists, is in the stream
// once the cluster forms.
func TestFirstStartWhileClusterFormsPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	firstStartWhileClusterForms(t, newEnv(t, pg, "public.items"), "replication slot created: capturing from")
}

func TestFirstStartWhileClusterFormsMySQL(t *testing.T) {
	t.Parallel()
	my := mysqltest.New(t)
	firstStartWhileClusterForms(t, newMySQLEnv(t, my, "shop.items"), "capturing from gtid:")
}

func firstStartWhileClusterForms(t *testing.T, e *env, capturing string) {
	e.exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	base := e.serveHTTP()
	plan := natstest.PlanCluster(t, 3) // members 2 and 3 start later
	m := plan.Member(0)
	e.cfg.NATS.ServerName = m.Name
	e.cfg.NATS.Listen = m.Listen
	e.cfg.NATS.StoreDir = m.StoreDir
	e.cfg.NATS.Cluster = &sidecar.ClusterConfig{Name: plan.Name, Listen: m.Cluster.Listen, Routes: plan.Routes(), User: natstest.RouteUser, Password: natstest.RoutePassword}
	e.cfg.NATS.Users = []sidecar.NATSUser{{User: natstest.Admin.User, Password: natstest.Admin.Password, Permissions: "admin"}}
	e.cfg.Stream.Replicas = 3

	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sidecar.Run(ctx, e.cfg, slog.New(slog.NewTextHandler(logs, nil)), sidecar.Options{}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("run: %v", err)
		}
	}()
	// The line is the promise under test: what is committed after it
	// reaches the stream.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(logs.String(), capturing) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q line within a minute:\n%s", capturing, logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	vals := make([]string, 200)
	for i := range vals {
		vals[i] = fmt.Sprintf("(%d)", i+1)
	}
	e.exec(`INSERT INTO items VALUES ` + strings.Join(vals, ","))
	if code, _ := httpGet(t, base+"/readyz"); code == 200 {
		t.Fatal("sluice was ready before its cluster formed: the test proves nothing")
	}
	plan.Start(1)
	plan.Start(2)
	waitReady(t, base, 2*time.Minute)
	events := readRows(t, adminURLs(plan), e.cfg.Stream.Name, 200, 2*time.Minute)
	seen := map[string]bool{}
	for _, ev := range events {
		seen[string(ev.Key["id"])] = true
	}
	for i := 1; i <= 200; i++ {
		if !seen[strconv.Itoa(i)] {
			t.Fatalf("row %d, committed while the cluster formed, is not in the stream (%d of 200 are)", i, len(seen))
		}
	}
}
