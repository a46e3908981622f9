package capture

import (
	"context"
	"errors"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
)

// Transform rewrites changes before anything of them leaves the process.
type Transform interface {
	Change(c *sources.Change) (*sources.Change, error)
	// Table returns the shape t's changes are rewritten to.
	Table(t *sources.Table) (*sources.Table, error)
	// KeyOrderKept tells whether the rewritten keys of a table still sort
	// as the table's: chunk events state key ranges, so without it a
	// table's chunk events are left out.
	KeyOrderKept(t *sources.Table) bool
}

// handler turns one Stream call's changes into messages: it is the
// sources.Handler the pipeline gives the source.
type handler struct {
	p          *Pipeline
	ids        numbering
	skip       *sink.StoredIDs
	key        []byte
	progressed bool
	// resumedSeq is the stream sequence of the checkpoint this Stream call
	// resumed from; published tells whether it has published anything yet.
	// Until it has, every transaction it replays was stored before (its
	// messages are skipped), and its checkpoint must not claim a sequence
	// beyond resumedSeq: the stream's last sequence covers later
	// transactions, whose ids a restart would then not read back.
	resumedSeq uint64
	published  bool
	// versions are the schema versions in force, by table; replaced, never
	// changed in place, as checkpoints share it. versionsMoved tells
	// whether they changed in the current transaction.
	versions      map[string]int
	versionsMoved bool
	inForceLast   *sources.Table
}

// newHandler is the handler of a Stream call resuming from checkpoint
// from; skip holds the ids stored after it.
func newHandler(p *Pipeline, skip *sink.StoredIDs, from checkpoint.Checkpoint) *handler {
	return &handler{p: p, ids: numbering{source: p.cfg.SourceName}, skip: skip,
		resumedSeq: from.StreamSeq, versions: from.SchemaVersions}
}

func (h *handler) Change(ctx context.Context, c *sources.Change) error {
	h.progressed = true
	if h.ids.begin(c.Pos) {
		h.p.txBegan()
	}
	if t := h.p.cfg.Tap; t != nil {
		drop, err := t.Change(ctx, c, emitter{h})
		if drop || err != nil {
			return err
		}
	}
	if err := h.change(ctx, c); !errors.Is(err, ErrDeadLettered) {
		return err
	}
	return nil // recorded on the dead-letter subject; the log goes on
}

func (h *handler) Commit(ctx context.Context, c sources.Commit) error {
	h.progressed = true
	h.ids.end()
	h.p.cfg.Metrics.handedTx(string(c.Pos), c.Time)
	a := sink.Acked{Pos: c.Pos, Time: c.Time}
	if h.versionsMoved {
		a.Versions, h.versionsMoved = h.versions, false
	}
	if !h.published {
		a.Capped, a.MaxSeq = true, h.resumedSeq
	}
	err := h.p.pub.Commit(ctx, a)
	h.p.txEnded()
	return err
}

// Opened is the source telling that its Stream call has the log open.
func (h *handler) Opened() { h.p.setOpen(true) }

// change publishes a change of the log or of the tap: rewritten by the
// transform, versioned by the schema registry, judged by its contract, on
// its key's partition.
func (h *handler) change(ctx context.Context, c *sources.Change) error {
	if t := h.p.cfg.Transform; t != nil {
		var err error
		if c, err = t.Change(c); err != nil {
			return err
		}
	}
	if h.p.cfg.Schemas != nil {
		table, err := h.versioned(ctx, c)
		if err != nil {
			return err
		}
		if table != c.Table {
			v := *c
			v.Table = table
			c = &v
		}
		h.inForce(table)
	}
	subjects, err := h.p.subjects(c.Table)
	if err != nil {
		return err
	}
	// A change whose message is already stored (a replay) was judged when
	// it was published: consumers have it, so a contract changed since
	// does not judge it again.
	if k := h.p.cfg.Contracts; k != nil && !h.skip.Has(h.ids.peek(c.Pos).String()) {
		if policy, reasons := k.Check(c); policy != "" {
			return h.breach(ctx, c, subjects, policy, reasons)
		}
	}
	if c.Op == sources.OpTruncate {
		// A truncate removes keys of every partition.
		for i, s := range subjects {
			if _, err := h.publish(ctx, s, i, c); err != nil {
				return err
			}
		}
		return nil
	}
	h.key = sink.AppendCanonicalKey(h.key[:0], c.KeyValues())
	part := sink.Partition(h.key, len(subjects))
	_, err = h.publish(ctx, subjects[part], part, c)
	return err
}
