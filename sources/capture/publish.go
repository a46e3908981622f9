package capture

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// subjects returns the partition subjects of a table shape, by partition.
func (p *Pipeline) subjects(t *sources.Table) ([]string, error) {
	if s, ok := p.subj[t]; ok {
		return s, nil
	}
	if err := subjectTokens(t); err != nil {
		return nil, err
	}
	base := p.cfg.Prefix + "." + p.cfg.SourceName + "." + t.Schema + "." + t.Name + "."
	s := make([]string, p.cfg.Partitions)
	for i := range s {
		s[i] = base + strconv.Itoa(i)
	}
	p.subj[t] = s
	return s, nil
}

// subjectTokens refuses a table whose schema or name cannot be a token of
// its subjects: a '.' would shift the tokens, a '*' or '>' would make a
// wildcard. Patterns never take such a table in (sources.TableSet.Unfit);
// one listed by name stops the pipeline here, before anything of it is
// published.
func subjectTokens(t *sources.Table) error {
	for _, tok := range []string{t.Schema, t.Name} {
		if !sources.SubjectToken(tok) {
			return fmt.Errorf("table %s.%s: its name cannot be a NATS subject token (no '.', '*', '>' or whitespace); rename it or leave it out of source.tables", t.Schema, t.Name)
		}
	}
	return nil
}

// publish publishes a row change on subject, its table's partition
// partition, under the transaction's next message id, which it returns.
func (h *handler) publish(ctx context.Context, subject string, partition int, c *sources.Change) (ID, error) {
	id := h.ids.next(c.Pos)
	sid := id.String()
	if h.skip.Has(sid) {
		// Stored before a crash or reconnect; the replay must not repeat it.
		return id, nil
	}
	data := h.p.enc.Event(c, time.Now())
	if max := h.p.cfg.MaxPayload; max > 0 && len(data)+len(sid)+len(subject)+64 > max {
		return id, h.tooLarge(ctx, subject, sid, c, len(data), max)
	}
	h.p.cfg.Metrics.event(c.Table, c.Op, partition)
	return id, h.send(ctx, subject, sid, data)
}

// publishData publishes an event that is not a row change (a chunk event).
func (h *handler) publishData(ctx context.Context, subject string, pos sources.Position, data []byte) error {
	id := h.ids.next(pos).String()
	if h.skip.Has(id) {
		return nil
	}
	if max := h.p.cfg.MaxPayload; max > 0 && len(data)+len(id)+len(subject)+64 > max {
		return fmt.Errorf("%w: a chunk event on %s is %d bytes, the limit is %d: lower backfill.chunk_size or raise nats.max_payload",
			ErrTooLarge, subject, len(data), max)
	}
	return h.send(ctx, subject, id, data)
}

// send publishes a message this Stream call produced (not one it skipped
// as stored before).
func (h *handler) send(ctx context.Context, subject, id string, data []byte) error {
	h.published = true
	return h.p.pub.Publish(ctx, subject, id, data)
}
