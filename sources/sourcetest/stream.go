package sourcetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// event is one call a Stream made of its handler: a change or a commit.
type event struct {
	change *sources.Change
	commit *sources.Commit
}

// stream runs a source's Stream in the background and records what it
// hands over, in order; it checks that no change comes before Opened.
type stream struct {
	events chan event
	opened chan struct{}
	cancel context.CancelFunc
	// ended closes when Stream has returned err.
	ended chan struct{}
	err   error

	mu        sync.Mutex
	wasOpened bool
	early     error // reported by stop
	reported  bool
	// unkinded is the first change whose table lacks kinds, reported by
	// stop.
	unkinded error
}

// startStream streams src from `from` until the test ends or stop, and
// waits until Stream has opened the log. Its cleanup runs before the
// source's Close (registered earlier): Stream owns connections of the
// source until it returns.
func startStream(t *testing.T, ctx context.Context, src sources.Source, from sources.Position) *stream {
	t.Helper()
	sctx, cancel := context.WithCancel(ctx)
	s := &stream{events: make(chan event, 1000), opened: make(chan struct{}), ended: make(chan struct{}), cancel: cancel}
	go func() {
		s.err = src.Stream(sctx, from, s)
		close(s.ended)
	}()
	t.Cleanup(func() { s.stop(t) })
	select {
	case <-s.opened:
	case <-s.ended:
		t.Fatalf("Stream ended before opening the log: %v", s.err)
	case <-ctx.Done():
		t.Fatal("Stream never called sources.Opened: every backfill would wait for it")
	}
	return s
}

// stop ends the stream and waits for Stream to return; it may be called
// again.
func (s *stream) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	select {
	case <-s.ended:
	case <-time.After(30 * time.Second):
		t.Error("Stream did not return within 30s after its context ended")
	}
	if err := s.orderErr(); err != nil {
		t.Error(err)
	}
	s.mu.Lock()
	err := s.unkinded
	s.unkinded = nil
	s.mu.Unlock()
	if err != nil {
		t.Error(err)
	}
}

func (s *stream) Opened() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.wasOpened {
		s.wasOpened = true
		close(s.opened)
	}
}

// orderErr is the first error of order, once.
func (s *stream) orderErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.early
	s.early = nil
	return err
}

func (s *stream) Change(ctx context.Context, c *sources.Change) error {
	s.mu.Lock()
	if !s.wasOpened && !s.reported {
		s.early, s.reported = errors.New("Stream handed over a change before calling sources.Opened"), true
	}
	if err := kindsErr(c.Table); err != nil && s.unkinded == nil {
		s.unkinded = fmt.Errorf("Stream handed over a change of %w", err)
	}
	s.mu.Unlock()
	return s.put(ctx, event{change: c})
}

// Commit may come before Opened: a source may record where it starts.
func (s *stream) Commit(ctx context.Context, c sources.Commit) error {
	return s.put(ctx, event{commit: &c})
}

func (s *stream) put(ctx context.Context, e event) error {
	select {
	case s.events <- e:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next waits for the next event.
func (s *stream) next(t *testing.T, ctx context.Context) event {
	t.Helper()
	select {
	case e := <-s.events:
		return e
	case <-s.ended:
		// What was handed over before the end still counts.
		select {
		case e := <-s.events:
			return e
		default:
		}
		t.Fatalf("Stream ended: %v", s.err)
	case <-ctx.Done():
		t.Fatal("nothing more came through the stream")
	}
	return event{}
}

// change waits for the first change that match accepts, passing over
// commits and other changes.
func (s *stream) change(t *testing.T, ctx context.Context, match func(*sources.Change) bool) *sources.Change {
	t.Helper()
	for {
		if e := s.next(t, ctx); e.change != nil && match(e.change) {
			return e.change
		}
	}
}

// commit waits for the next commit, passing over changes.
func (s *stream) commit(t *testing.T, ctx context.Context) sources.Commit {
	t.Helper()
	for {
		if e := s.next(t, ctx); e.commit != nil {
			return *e.commit
		}
	}
}

// tx waits for the next transaction that changes table: its n changes
// (commits of other transactions before the first are passed over),
// then its commit. Nothing may come between them: not a commit, not a
// change of another table; all share one position.
func (s *stream) tx(t *testing.T, ctx context.Context, table string, n int) ([]*sources.Change, sources.Commit) {
	t.Helper()
	first := s.change(t, ctx, onTable(table))
	changes := []*sources.Change{first}
	for len(changes) < n {
		e := s.next(t, ctx)
		switch {
		case e.commit != nil:
			t.Fatalf("a commit came after %d of the transaction's %d changes", len(changes), n)
		case !onTable(table)(e.change):
			t.Fatalf("a change of %s came amid the transaction's changes of %s", e.change.Table.QualifiedName(), table)
		case e.change.Pos != first.Pos:
			t.Fatalf("change %d of a transaction has position %s, the first %s", len(changes)+1, e.change.Pos, first.Pos)
		}
		changes = append(changes, e.change)
	}
	e := s.next(t, ctx)
	if e.commit == nil {
		t.Fatalf("after the transaction's %d changes came a change of %s, not its commit", n, e.change.Table.QualifiedName())
	}
	if e.commit.Pos == "" {
		t.Error("a commit has no position to resume from")
	}
	return changes, *e.commit
}

// onTable matches the changes of table (schema.table).
func onTable(table string) func(*sources.Change) bool {
	return func(c *sources.Change) bool { return c.Table.QualifiedName() == table }
}

// kindsErr tells what is wrong with a table's Kinds: there must be one per
// column, each set (KindOther for a type of no fixed JSON form), since the
// JSON Schema, contracts and chunk bounds read them and never a type name.
func kindsErr(table *sources.Table) error {
	if len(table.Kinds) != len(table.Columns) {
		return fmt.Errorf("%s with %d kinds for its %d columns %q: Table.Kinds must be aligned with Columns",
			table.QualifiedName(), len(table.Kinds), len(table.Columns), table.Columns)
	}
	if i := slices.Index(table.Kinds, ""); i >= 0 {
		typ := ""
		if i < len(table.Types) {
			typ = table.Types[i]
		}
		return fmt.Errorf("%s whose column %s (type %q) has no kind: use sources.KindOther for a type of no fixed JSON form",
			table.QualifiedName(), table.Columns[i], typ)
	}
	return nil
}
