package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/sluice-cdc/sluice/backfill"
	"github.com/sluice-cdc/sluice/sink"
)

// database is what the bench needs of the database under sluice.
type database interface {
	sourceYAML() string
	// table is the bench table as sluice names it (schema.table; MySQL
	// database.table).
	table() string
	// prepareBaseline readies the baseline reader at the current end of
	// the log, before the backlog is written.
	prepareBaseline(ctx context.Context) (baseline, error)
	// load commits rows [from, from+n), txSize rows a transaction.
	load(ctx context.Context, from, n, txSize, rowBytes int, progress func(int)) error
	// bigTx commits rows [from, from+n) in one transaction.
	bigTx(ctx context.Context, from, n, rowBytes int) error
	// insertOne commits one row in its own transaction.
	insertOne(ctx context.Context, id int, payload string) error
	close()
}

// baseline reads the backlog the way the database's own tools do.
type baseline interface {
	name() string
	// read reads the n events written since prepareBaseline.
	read(ctx context.Context, n int) (time.Duration, error)
}

const streamName = "SLUICE_BENCH"

// benchSource is the source name in sluice's config: its control subjects
// and its slot's and publication's names are made from it.
const benchSource = "bench"

// run is one bench run's shared state.
type run struct {
	o        options
	dir      string
	db       database
	config   string
	natsURL  string
	http     string
	cluster  *clusterNodes
	warmSeq  uint64 // the stream's last sequence before the backlog
	baseline string // the database baseline's name
	storeKey string // --store-encryption's key, for every start of sluice
}

func bench(ctx context.Context, o options) (*result, error) {
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return nil, fmt.Errorf("--profile: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r := &run{o: o, dir: dir}
	res := &result{Kind: o.kind, Rows: o.rows, RowBytes: o.rowBytes, TxSize: o.txSize,
		Partitions: o.partitions, Replicas: o.replicas, Sluice: o.sluiceBin}

	step("starting a private %s", map[string]string{"pg": "PostgreSQL", "mysql": "MariaDB"}[o.kind])
	switch o.kind {
	case "pg":
		r.db, err = startPostgres(ctx, dir)
	default:
		r.db, err = startMySQL(ctx, dir, o.rowBytes)
	}
	if err != nil {
		return nil, err
	}
	defer r.db.close()
	if err := r.writeConfig(); err != nil {
		return nil, err
	}
	defer r.cluster.stop()

	// A first run creates the slot, publication and stream, and leaves a
	// checkpoint, so the backlog written next is read from the log.
	step("first start of sluice: slot, stream and checkpoint")
	if err := r.warmUp(ctx); err != nil {
		return nil, err
	}
	// Rounds alternate sluice with its limits, each on a backlog of its
	// own, so that a slow spell of the machine lands on one round, which
	// the median leaves out, rather than on one side of the ratio.
	for i := range o.rounds {
		rd, err := r.round(ctx, i)
		if err != nil {
			return nil, err
		}
		res.Rounds = append(res.Rounds, rd)
	}
	res.Baseline = r.baseline

	step("latency: %d rows/s, one per transaction, for %s", o.latencyRate, o.latencyFor)
	next := o.rounds*o.rows + 1
	if res.Latency, err = r.latency(ctx, next); err != nil {
		return nil, err
	}
	next += res.Latency.Rows

	if o.bigTxRows > 0 {
		step("one transaction of %d rows", o.bigTxRows)
		if res.BigTx, err = r.bigTx(ctx, next); err != nil {
			return nil, err
		}
		next += o.bigTxRows
	}

	// Last: apply's writes to the same server would otherwise linger
	// (WAL, autovacuum) into the latency and memory runs.
	if pg, ok := r.db.(*pgBench); ok && o.apply {
		step("sluice apply of the backlog into a new database of the same PostgreSQL")
		if res.Apply, err = r.applyThroughput(ctx, pg); err != nil {
			return nil, err
		}
	}
	// Last of all: the backfill puts as many events again on the stream,
	// which apply would land too, and before the latency run it changed
	// the latency figures (see backfillThroughput).
	if o.backfill {
		step("sluice backfills %s: its %d rows, chunks of %d", r.db.table(), next, backfill.DefaultChunkSize)
		if err := r.backfillThroughput(ctx, res, int64(next)); err != nil {
			return nil, err
		}
	}
	if pg, ok := r.db.(*pgBench); ok && o.collationRows > 0 {
		step(`collation: backfills of %d rows keyed by text COLLATE "C", and "en-x-icu" with sluice check's index and without`, o.collationRows)
		if err := r.collationCliff(ctx, pg, res); err != nil {
			return nil, err
		}
	}
	res.finish()
	return res, nil
}

// writeConfig writes sluice's config: the database, the embedded NATS (in a
// cluster with two in-process nodes for --replicas 3) and an HTTP port.
func (r *run) writeConfig() error {
	natsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	if r.http, err = freeAddr(); err != nil {
		return err
	}
	r.natsURL = "nats://" + natsAddr
	clusterYAML := ""
	if r.o.replicas > 1 {
		if r.cluster, err = startClusterNodes(filepath.Join(r.dir, "nats-peers"), r.o.replicas); err != nil {
			return err
		}
		clusterYAML = fmt.Sprintf(", server_name: n1, cluster: {name: %s, listen: %q, routes: [%s], user: %s, password: %s}",
			clusterName, r.cluster.ownRoute, strings.Join(r.cluster.routes, ", "), routeUser, routePassword)
	}
	if r.o.storeCipher != "" {
		// A random key: the bench's store lives and dies with the run.
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		r.storeKey = hex.EncodeToString(key)
		clusterYAML += fmt.Sprintf(", store_encryption: {cipher: %s, key_env: %s}", r.o.storeCipher, storeKeyEnv)
	}
	cfg := fmt.Sprintf(`source: %s
nats: {listen: %q, store_dir: %q%s}
stream: {partitions: %d, replicas: %d}
http: {listen: %q, pprof: true}
backfill: {initial: false}
`, r.db.sourceYAML(), natsAddr, filepath.Join(r.dir, "nats"), clusterYAML, r.o.partitions, r.o.replicas, r.http)
	r.config = filepath.Join(r.dir, "sluice.yaml")
	return os.WriteFile(r.config, []byte(cfg), 0o600)
}

// profile is where a profile goes, or "" without --profile.
func (r *run) profile(name string) string {
	if r.o.profileDir == "" {
		return ""
	}
	return filepath.Join(r.o.profileDir, name+".pprof")
}

func (r *run) logPath() string { return filepath.Join(r.dir, "sluice.log") }

func (r *run) start(ctx context.Context, cpuProfile string) (*sluiceProc, *nats.Conn, jetstream.Stream, error) {
	var env []string
	if r.storeKey != "" {
		env = append(env, storeKeyEnv+"="+r.storeKey)
	}
	p, err := startSluice(r.o.sluiceBin, r.config, r.logPath(), r.http, cpuProfile, env)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := p.waitReady(ctx); err != nil {
		_ = p.stop()
		return nil, nil, nil, err
	}
	// As sluice's local admin, which reaches the event stream under the
	// events API prefix.
	admin, err := sink.ReadLocalAdmin(sink.LocalAdminPath(filepath.Join(r.dir, "nats")))
	if err != nil {
		_ = p.stop()
		return nil, nil, nil, err
	}
	nc, err := nats.Connect(r.natsURL, nats.UserInfo(admin.User, admin.Password))
	if err != nil {
		_ = p.stop()
		return nil, nil, nil, err
	}
	js, err := jetstream.NewWithAPIPrefix(nc, sink.EventsAPIPrefix)
	if err != nil {
		nc.Close()
		_ = p.stop()
		return nil, nil, nil, err
	}
	s, err := js.Stream(ctx, streamName)
	if err != nil {
		nc.Close()
		_ = p.stop()
		return nil, nil, nil, fmt.Errorf("sluice's stream: %w", err)
	}
	return p, nc, s, nil
}

// warmUp runs sluice once until it has published one row, then stops it.
func (r *run) warmUp(ctx context.Context) error {
	p, nc, s, err := r.start(ctx, "")
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := r.db.insertOne(ctx, 0, payload(0, r.o.rowBytes-8)); err != nil {
		_ = p.stop()
		return err
	}
	// The table's first shape is announced ahead of the row: waiting for
	// the first message only would let the row land after warmSeq, where
	// the backlog's count starts.
	if _, err := waitLastSeq(ctx, s, 2, p); err != nil {
		_ = p.stop()
		return err
	}
	// The warm-up row is all there is to publish: the backlog starts
	// after it.
	info, err := s.Info(ctx)
	if err != nil {
		_ = p.stop()
		return err
	}
	r.warmSeq = info.State.LastSeq
	return p.stop()
}

// msgSize is the size of sluice's messages, which the JetStream limit
// publishes alike.
type msgSize struct{ data, id int }

// catchUp starts sluice on the backlog and times it from its first stored
// event to its last, by the stream's own store times. The first round
// writes the profiles.
func (r *run) catchUp(ctx context.Context, rd *round) (msgSize, error) {
	cpu, heap := r.profile("catch-up.cpu"), r.profile("catch-up.heap")
	if rd.N > 1 {
		cpu, heap = "", ""
	}
	p, nc, s, err := r.start(ctx, cpu)
	if err != nil {
		return msgSize{}, err
	}
	defer nc.Close()
	defer p.stop()
	first := r.warmSeq + 1
	want := first + uint64(r.o.rows) - 1
	if _, err := waitLastSeq(ctx, s, want, p); err != nil {
		return msgSize{}, err
	}
	a, err := s.GetMsg(ctx, first)
	if err != nil {
		return msgSize{}, err
	}
	z, err := s.GetMsg(ctx, want)
	if err != nil {
		return msgSize{}, err
	}
	rd.SluiceSeconds = z.Time.Sub(a.Time).Seconds()
	rd.SluiceRate = float64(r.o.rows-1) / rd.SluiceSeconds
	if rd.PeakRSS, err = p.peakRSS(); err != nil {
		return msgSize{}, err
	}
	if err := p.heapProfile(heap); err != nil {
		return msgSize{}, err
	}
	// Nothing more than the backlog: no event twice.
	time.Sleep(500 * time.Millisecond)
	info, err := s.Info(ctx)
	if err != nil {
		return msgSize{}, err
	}
	if info.State.LastSeq != want {
		return msgSize{}, fmt.Errorf("sluice stored %d messages for a backlog of %d rows", info.State.LastSeq-first+1, r.o.rows)
	}
	if info.Cluster != nil && r.o.replicas > 1 {
		rd.Leader = info.Cluster.Leader
	}
	r.warmSeq = want // the next round's backlog starts after it
	if err := p.stop(); err != nil {
		return msgSize{}, err
	}
	return msgSize{data: len(z.Data), id: len(z.Header.Get(jetstream.MsgIDHeader))}, nil
}

// waitLastSeq waits until the stream's last sequence reaches seq.
func waitLastSeq(ctx context.Context, s jetstream.Stream, seq uint64, p *sluiceProc) (time.Time, error) {
	deadline := time.Now().Add(30 * time.Minute)
	for {
		info, err := s.Info(ctx)
		if err == nil && info.State.LastSeq >= seq {
			return time.Now(), nil
		}
		select {
		case <-p.done:
			return time.Time{}, fmt.Errorf("sluice exited (%v); its log:\n%s", p.err, tail(p.logPath, 20))
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return time.Time{}, errors.New("sluice did not publish everything within 30m")
		}
	}
}

// bigTx commits one transaction of BigTxRows rows while sluice runs, and
// reads sluice's peak RSS once all of it is stored.
func (r *run) bigTx(ctx context.Context, from int) (*bigTxResult, error) {
	p, nc, s, err := r.start(ctx, r.profile("big-tx.cpu"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	defer p.stop()
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	idle, err := p.peakRSS()
	if err != nil {
		return nil, err
	}
	n := r.o.bigTxRows
	if err := r.db.bigTx(ctx, from, n, r.o.rowBytes); err != nil {
		return nil, fmt.Errorf("write the big transaction: %w", err)
	}
	committed := time.Now()
	done, err := waitLastSeq(ctx, s, info.State.LastSeq+uint64(n), p)
	if err != nil {
		return nil, err
	}
	peak, err := p.peakRSS()
	if err != nil {
		return nil, err
	}
	if err := p.heapProfile(r.profile("big-tx.heap")); err != nil {
		return nil, err
	}
	return &bigTxResult{Rows: n, IdleRSS: idle, PeakRSS: peak,
		CommitToLastAck: done.Sub(committed).Seconds()}, nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

// newBar is a progress bar on a terminal, and silent otherwise.
func newBar(n int, unit string) *progressbar.ProgressBar {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return progressbar.DefaultSilent(int64(n))
	}
	return progressbar.NewOptions64(int64(n),
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionFullWidth(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }))
}
