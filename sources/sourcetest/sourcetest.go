// Package sourcetest checks a driver against the contract of
// sources.Driver and sources.Source: the conformance test every driver
// runs, against its real database, through the same Driver calls that
// sluice run and sluice check make.
package sourcetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// Harness is a driver and a database it can capture.
type Harness struct {
	Driver sources.Driver
	// Spec captures Table, which exists with the columns id (an integer
	// primary key) and v (text), and no rows.
	Spec  sources.Spec
	Table string // schema.table (MySQL: db.table)
	// Insert commits the row (id, v) to Table.
	Insert func(ctx context.Context, id int, v string) error
}

// Run checks, in order: Check finds nothing wrong and shows Table with
// its key; Open's source lists Table and its columns and names its
// database; Stream calls sources.Opened before it hands over a change,
// then hands over an insert and a commit; a watermark comes through the
// stream as a signal; a chunk reads the row; Close ends it all.
func Run(t *testing.T, h Harness) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pf := h.Driver.Check(ctx, h.Spec)
	if len(pf.Problems) > 0 {
		t.Fatalf("Check: %q", pf.Problems)
	}
	i := slices.IndexFunc(pf.Catalog.Tables, func(c sources.CapturedTable) bool { return c.Key.Table == h.Table })
	if i < 0 || !slices.Equal(pf.Catalog.Tables[i].Key.Columns, []string{"id"}) {
		t.Errorf("Check's catalog %+v, want %s keyed by id", pf.Catalog.Tables, h.Table)
	}

	src, err := h.Driver.Open(ctx, h.Spec)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer src.Close(context.Background())
	if !slices.Contains(src.Tables(), h.Table) {
		t.Errorf("Tables() = %q, want %s", src.Tables(), h.Table)
	}
	if cols, err := src.Columns(ctx, h.Table); err != nil || !slices.Equal(cols, []string{"id", "v"}) {
		t.Errorf("Columns(%s) = %q, %v; want id, v", h.Table, cols, err)
	}
	if src.Database() == "" {
		t.Error("Database() is empty: events would carry no source.db")
	}
	if n := src.RetainedBytes(); n < -1 {
		t.Errorf("RetainedBytes() = %d: want a size, or -1 for unknown", n)
	}

	rec := newRecorder()
	sctx, stop := context.WithCancel(ctx)
	go func() {
		rec.streamErr = src.Stream(sctx, "", rec)
		close(rec.ended)
	}()
	defer func() {
		stop()
		select {
		case <-rec.ended:
		case <-time.After(30 * time.Second):
			t.Error("Stream did not return after its context ended")
		}
	}()
	select {
	case <-rec.opened:
	case <-rec.ended:
		t.Fatalf("Stream ended before opening the log: %v", rec.streamErr)
	case <-ctx.Done():
		t.Fatal("Stream never called sources.Opened: every backfill would wait for it")
	}
	if err := h.Insert(ctx, 1, "a"); err != nil {
		t.Fatal(err)
	}
	c := rec.next(t, ctx, func(c *sources.Change) bool { return c.Table.QualifiedName() == h.Table })
	if c.Op != sources.OpCreate || len(c.KeyValues()) != 1 || string(c.KeyValues()[0]) != "1" {
		t.Errorf("streamed %s key %s, want an insert of key 1", c.Op, c.KeyValues())
	}
	commit := rec.commit(t, ctx)
	src.Ack(commit.Pos)

	if err := src.WriteSignal(ctx, "low", "conformance"); err != nil {
		t.Fatalf("WriteSignal: %v", err)
	}
	c = rec.next(t, ctx, func(c *sources.Change) bool { _, ok := src.ReadSignal(c); return ok })
	if sig, _ := src.ReadSignal(c); sig != (sources.Signal{Source: h.Spec.Name, Kind: "low", ID: "conformance"}) {
		t.Errorf("ReadSignal = %+v, want the low watermark conformance of %s", sig, h.Spec.Name)
	}

	chunk, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: h.Table, Limit: 10})
	if err != nil {
		t.Fatalf("ReadChunk: %v", err)
	}
	if len(chunk.Rows) != 1 || chunk.Table == nil || !slices.Equal(chunk.Table.Columns, []string{"id", "v"}) {
		t.Errorf("ReadChunk = %d rows of %+v, want the one row (id, v)", len(chunk.Rows), chunk.Table)
	}
	if err := rec.err(); err != nil {
		t.Error(err)
	}
}

// recorder is a Handler that checks the order of its calls.
type recorder struct {
	opened  chan struct{}
	changes chan *sources.Change
	commits chan sources.Commit
	// ended closes when Stream has returned streamErr.
	ended     chan struct{}
	streamErr error

	mu        sync.Mutex
	wasOpened bool
	early     error
}

func newRecorder() *recorder {
	return &recorder{opened: make(chan struct{}), ended: make(chan struct{}), changes: make(chan *sources.Change, 100), commits: make(chan sources.Commit, 100)}
}

func (r *recorder) Opened() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.wasOpened {
		r.wasOpened = true
		close(r.opened)
	}
}

// before notes a call that came before Opened.
func (r *recorder) before(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.wasOpened && r.early == nil {
		r.early = errors.New("Stream handed over a " + what + " before calling sources.Opened")
	}
}

func (r *recorder) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.early
}

func (r *recorder) Change(ctx context.Context, c *sources.Change) error {
	r.before("change")
	select {
	case r.changes <- c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Commit may come before Opened: a source may record where it starts.
func (r *recorder) Commit(ctx context.Context, c sources.Commit) error {
	select {
	case r.commits <- c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next waits for the first change that match accepts.
func (r *recorder) next(t *testing.T, ctx context.Context, match func(*sources.Change) bool) *sources.Change {
	t.Helper()
	for {
		select {
		case c := <-r.changes:
			if match(c) {
				return c
			}
		case <-r.ended:
			t.Fatalf("Stream ended: %v", r.streamErr)
		case <-ctx.Done():
			t.Fatal("the change never came through the stream")
		}
	}
}

// commit waits for a commit.
func (r *recorder) commit(t *testing.T, ctx context.Context) sources.Commit {
	t.Helper()
	select {
	case c := <-r.commits:
		return c
	case <-r.ended:
		t.Fatalf("Stream ended: %v", r.streamErr)
	case <-ctx.Done():
		t.Fatal("no commit came through the stream")
	}
	return sources.Commit{}
}
