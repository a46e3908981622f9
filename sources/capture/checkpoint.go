package capture

import (
	"context"
	"time"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/sink"
)

// CheckpointStore is where the pipeline keeps its position.
type CheckpointStore interface {
	Load(ctx context.Context, source string) (checkpoint.Checkpoint, bool, error)
	Save(ctx context.Context, cp checkpoint.Checkpoint) error
}

// Transactions are handed to the publisher in log order and stored by
// JetStream in that order; the publisher reports each boundary once every
// message before it is stored (onAcked). The checkpoint loop saves the
// latest such boundary and only then acknowledges it to the source, so the
// database releases only what JetStream holds.

// onAcked records a transaction boundary JetStream has fully stored.
func (p *Pipeline) onAcked(a sink.Acked) {
	p.mu.Lock()
	p.acked.Position, p.acked.StreamSeq, p.acked.LastEvent = a.Pos, a.Seq, a.Time
	if a.Versions != nil {
		p.acked.SchemaVersions = a.Versions
	}
	p.mu.Unlock()
	p.cfg.Metrics.ackedTx(string(a.Pos), a.Time)
}

func (p *Pipeline) latest() checkpoint.Checkpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked
}

func (p *Pipeline) checkpointLoop(ctx context.Context, saved *checkpoint.Checkpoint) error {
	t := time.NewTicker(p.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := p.saveCheckpoint(ctx, saved); err != nil {
			if !sink.Transient(err) {
				return err
			}
			// The next tick retries; until then the source keeps its log.
			p.log.Warn("checkpoint not written; retrying", "error", err)
		}
	}
}

// saveCheckpoint writes the latest stored boundary, then tells the source it
// may release the log up to it: in that order, so a crash between the two
// only replays.
func (p *Pipeline) saveCheckpoint(ctx context.Context, saved *checkpoint.Checkpoint) error {
	cp := p.latest()
	if cp.Position == "" || (cp.Position == saved.Position && cp.StreamSeq == saved.StreamSeq) {
		return nil
	}
	err := p.store.Save(ctx, cp)
	p.cfg.Metrics.checkpointSaved(err)
	if err != nil {
		return err
	}
	*saved = cp
	p.src.Ack(cp.Position)
	return nil
}

// txBegan records that the source handed over the first change of a
// transaction.
func (p *Pipeline) txBegan() { p.inTx.Store(true) }

// txEnded records that the source handed over a transaction's commit: a
// clean stop waiting for it ends the stream here.
func (p *Pipeline) txEnded() {
	// Cleared before stopping is read; the stopper sets stopping before it
	// reads inTx: one of the two ends the stream at this boundary.
	p.inTx.Store(false)
	if p.stopping.Load() {
		p.stopStream()
	}
}

// stopAtBoundary ends the source's Stream call (sctx) once Run's group
// stops (gctx). A failure stops it at once; a clean stop (ctx ending)
// outside a transaction too, and inside one at its commit (txEnded), or
// after BoundaryTimeout.
func (p *Pipeline) stopAtBoundary(ctx, gctx, sctx context.Context) error {
	<-gctx.Done()
	if ctx.Err() == nil {
		p.stopStream()
		return nil
	}
	p.stopping.Store(true)
	if !p.inTx.Load() {
		p.stopStream()
		return nil
	}
	t := time.NewTimer(p.cfg.BoundaryTimeout)
	defer t.Stop()
	select {
	case <-t.C:
		p.log.Warn("stopping inside a transaction: it is replayed on restart (its stored messages are not published again)",
			"waited", p.cfg.BoundaryTimeout)
		p.stopStream()
	case <-sctx.Done():
	}
	return nil
}
