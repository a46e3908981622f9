package capture_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/capture"
)

// scriptSource is a log in memory: transaction i (from 1) holds one
// insert of row i, at position "i". Before the commit of a transaction
// listed in hold it waits for release, and reports having handed over the
// transaction's change on reached: the moment a stop may land between a
// stored message and its commit.
type scriptSource struct {
	table   *sources.Table
	rows    [][]sources.Value
	hold    map[int]bool
	reached chan int
	release chan struct{}
	// start is where a first start captures from ("" like a slot).
	start sources.Position

	mu    sync.Mutex
	acked sources.Position
}

func (s *scriptSource) Stream(ctx context.Context, from sources.Position, h sources.Handler) error {
	sources.Opened(h)
	start := 1
	if from != "" {
		n, err := strconv.Atoi(string(from))
		if err != nil {
			return err
		}
		start = n + 1
	}
	for i := start; i <= len(s.rows); i++ {
		pos := sources.Position(strconv.Itoa(i))
		if err := h.Change(ctx, &sources.Change{Op: sources.OpCreate, Table: s.table, After: s.rows[i-1], Pos: pos}); err != nil {
			return err
		}
		if s.hold[i] {
			s.reached <- i
			select {
			case <-s.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		// A real source notices a stop before it reads on.
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := h.Commit(ctx, sources.Commit{Pos: pos}); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s *scriptSource) Ack(pos sources.Position) {
	s.mu.Lock()
	s.acked = pos
	s.mu.Unlock()
}

func (s *scriptSource) Close(context.Context) error { return nil }

func (s *scriptSource) Start() sources.Position { return s.start }

type pipelineWorld struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	store  *checkpoint.Store
}

func newPipelineWorld(t *testing.T) pipelineWorld {
	t.Helper()
	srv := natstest.New(t)
	js, err := jetstream.New(srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	store, err := checkpoint.Open(context.Background(), js, "CP", 1)
	if err != nil {
		t.Fatal(err)
	}
	return pipelineWorld{js: js, stream: natstest.Stream(t, js), store: store}
}

// running is a pipeline's Run in progress.
type running struct {
	cancel context.CancelFunc
	done   <-chan error // what Run returned
}

// stop cancels the run and returns what Run returned.
func (r running) stop() error { r.cancel(); return <-r.done }

// run starts a pipeline over src.
func (w pipelineWorld) run(t *testing.T, src capture.Source, contracts *schemas.Contracts, boundary time.Duration) running {
	t.Helper()
	p, err := capture.New(context.Background(), capture.Config{
		SourceName: "t", SourceKind: "postgres", Database: "db", Prefix: "cdc", Partitions: 4, Window: 64,
		// Only the final checkpoint of a stop is written.
		CheckpointInterval: time.Hour,
		BoundaryTimeout:    boundary,
		Contracts:          contracts,
		Schemas:            schemas.NewRegistry("t", w.store),
		Log:                slog.New(slog.DiscardHandler),
	}, src, w.store, w.js, w.stream)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	t.Cleanup(cancel)
	return running{cancel, errc}
}

// waitLastSeq waits until the stream holds seq messages: they are stored.
func (w pipelineWorld) waitLastSeq(t *testing.T, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := w.stream.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.LastSeq >= seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream holds %d messages after 30s, want %d", info.State.LastSeq, seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ordersTable() *sources.Table {
	return &sources.Table{Schema: "public", Name: "orders", Columns: []string{"id", "status"},
		Types: []string{"int4", "text"}, Key: []int{0}}
}

// TestCleanStopCheckpointsStoredTransaction: a stop that lands after a
// transaction's message is stored but before its commit is read lets the
// source read on to the commit, so the final checkpoint covers it (issue
// 17: a restart replayed it and judged it again by a changed contract).
func TestCleanStopCheckpointsStoredTransaction(t *testing.T) {
	w := newPipelineWorld(t)
	src := &scriptSource{table: ordersTable(),
		rows:    [][]sources.Value{{sources.Value("1"), sources.Value(`"new"`)}, {sources.Value("2"), sources.Value(`"new"`)}},
		hold:    map[int]bool{2: true},
		reached: make(chan int, 1), release: make(chan struct{})}
	stop := w.run(t, src, nil, time.Minute)
	<-src.reached
	w.waitLastSeq(t, 2)
	// The commit arrives after the stop began.
	stop.cancel()
	close(src.release)
	if err := <-stop.done; err != nil {
		t.Fatal(err)
	}
	cp, ok, err := w.store.Load(context.Background(), "t")
	if err != nil || !ok {
		t.Fatalf("checkpoint: %v %v", ok, err)
	}
	if cp.Position != "2" || cp.StreamSeq != 2 {
		t.Fatalf("final checkpoint at %s seq %d; want 2 seq 2 (the stored transaction)", cp.Position, cp.StreamSeq)
	}
	if v := cp.SchemaVersions["public.orders"]; v != 1 {
		t.Fatalf("checkpoint's schema version of public.orders is %d, want 1 (%v)", v, cp.SchemaVersions)
	}
	if src.acked != "2" {
		t.Fatalf("source acknowledged %q, want 2", src.acked)
	}
}

// TestReplayNotJudgedAgain: a transaction stored but not checkpointed (the
// commit never came before the stop) is replayed after a restart; its
// message is in the stream, so a contract made stricter meanwhile does not
// stop sluice on it: consumers already have it.
func TestReplayNotJudgedAgain(t *testing.T) {
	w := newPipelineWorld(t)
	rows := [][]sources.Value{{sources.Value("1"), sources.Value(`"new"`)}, {sources.Value("2"), sources.Null}}
	src := &scriptSource{table: ordersTable(), rows: rows, hold: map[int]bool{2: true},
		reached: make(chan int, 1), release: make(chan struct{})}
	first := w.run(t, src, nil, 100*time.Millisecond)
	<-src.reached
	w.waitLastSeq(t, 2)
	// Stopped while the source waits: the boundary wait runs out, and the
	// checkpoint stays before the stored transaction 2.
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	close(src.release)
	if cp, _, _ := w.store.Load(context.Background(), "t"); cp.Position != "1" {
		t.Fatalf("checkpoint at %q, want 1 (transaction 2 was cut short)", cp.Position)
	}

	no := false
	contracts, err := schemas.NewContracts(map[string]schemas.Contract{"public.orders": {Policy: schemas.Halt,
		Columns: map[string]schemas.ColumnPolicy{"status": {Type: "string", Nullable: &no}}}})
	if err != nil {
		t.Fatal(err)
	}
	replay := &scriptSource{table: ordersTable(), rows: append(rows, []sources.Value{sources.Value("3"), sources.Value(`"paid"`)})}
	second := w.run(t, replay, contracts, time.Minute)
	w.waitLastSeq(t, 3)
	select {
	case err := <-second.done:
		t.Fatalf("the replayed, stored row was judged again: %v", err)
	default:
	}
	if err := second.stop(); err != nil {
		t.Fatal(err)
	}
	if cp, _, _ := w.store.Load(context.Background(), "t"); cp.Position != "3" {
		t.Fatalf("checkpoint at %q, want 3", cp.Position)
	}
	if ids := natstest.MsgIDs(t, w.stream); len(ids) != 3 || ids[1] != "t:2:0" {
		t.Fatalf("stream ids %v; want row 2 once", ids)
	}
	// The contract still holds for rows not yet published.
	next := &scriptSource{table: ordersTable(), rows: append(replay.rows, []sources.Value{sources.Value("4"), sources.Null})}
	if err := <-w.run(t, next, contracts, time.Minute).done; !errors.Is(err, schemas.ErrContract) {
		t.Fatalf("a new row breaking a halt contract: %v, want ErrContract", err)
	}
}

// TestFirstStartCheckpointsStart: a source whose database keeps no
// bookmark (MySQL) names where a first start captures from; it is the
// first checkpoint, written before streaming, so a crash before the
// first commit resumes there instead of at the log's end of the restart.
func TestFirstStartCheckpointsStart(t *testing.T) {
	w := newPipelineWorld(t)
	// No rows: the source streams nothing and commits nothing.
	src := &scriptSource{table: ordersTable(), start: "0"}
	r := w.run(t, src, nil, time.Minute)
	deadline := time.Now().Add(30 * time.Second)
	for {
		cp, ok, err := w.store.Load(context.Background(), "t")
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if cp.Position != "0" {
				t.Fatalf("first checkpoint at %q, want the source's start 0", cp.Position)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint within 30s of a first start: a crash now would lose what is committed until the restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}
