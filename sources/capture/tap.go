package capture

import (
	"context"
	"time"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
)

// Tap sees each change of the log, in order, before it is published. It
// may drop it (a change of sluice's own signal table) and may publish more
// through out, right where the change sits in the log.
type Tap interface {
	Change(ctx context.Context, c *sources.Change, out Emitter) (drop bool, err error)
}

// Emitter publishes extra events in log order, inside the transaction of
// the change being tapped (their message ids continue its indexes).
type Emitter interface {
	// Change publishes c like a change from the log. A row too large for
	// NATS goes to the dead-letter subject and returns ErrDeadLettered.
	Change(ctx context.Context, c *sources.Change) error
	// Chunk publishes the chunk event on every partition subject of its
	// table, at position pos.
	Chunk(ctx context.Context, ch *sink.Chunk, pos sources.Position) error
}

// emitter publishes what a Tap adds.
type emitter struct{ h *handler }

func (e emitter) Change(ctx context.Context, c *sources.Change) error { return e.h.change(ctx, c) }

func (e emitter) Chunk(ctx context.Context, ch *sink.Chunk, pos sources.Position) error {
	h := e.h
	if t := h.p.cfg.Transform; t != nil {
		if !t.KeyOrderKept(ch.Table) {
			return nil
		}
		table, err := t.Table(ch.Table)
		if err != nil {
			return err
		}
		c := *ch
		c.Table = table
		ch = &c
	}
	if h.p.cfg.Schemas != nil {
		table, err := h.versioned(ctx, &sources.Change{Table: ch.Table, Pos: pos})
		if err != nil {
			return err
		}
		c := *ch
		c.Table = table
		ch = &c
	}
	subjects, err := h.p.subjects(ch.Table)
	if err != nil {
		return err
	}
	keep := make([][][]sources.Value, len(subjects))
	for _, k := range ch.Keep {
		h.key = sink.AppendCanonicalKey(h.key[:0], k)
		p := sink.Partition(h.key, len(subjects))
		keep[p] = append(keep[p], k)
	}
	for p, s := range subjects {
		data := h.p.enc.AppendChunkEvent(nil, ch, keep[p], time.Now())
		if err := h.publishData(ctx, s, pos, data); err != nil {
			return err
		}
	}
	return nil
}
