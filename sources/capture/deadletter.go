package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
)

// ErrTooLarge means an event exceeds the largest message NATS accepts.
var ErrTooLarge = errors.New("event larger than the NATS max payload")

// ErrDeadLettered is what Emitter.Change returns for a row that went to
// the dead-letter subject instead of its partition (it wraps ErrTooLarge):
// a backfill then treats its key as one consumers must keep.
var ErrDeadLettered = fmt.Errorf("%w: sent to the dead-letter subject", ErrTooLarge)

// dlqSubject is the source's dead-letter subject, <prefix>.<source>._dlq.
func (p *Pipeline) dlqSubject() string {
	return p.cfg.Prefix + "." + p.cfg.SourceName + "._dlq"
}

// tooLarge puts a note of an event NATS cannot carry on the dead-letter
// subject, in the event's place in its transaction's numbering (id): its
// table, key, op, position and size, never a column value. The stream and
// any backfill go on; the operator raises the limit and backfills the key.
func (h *handler) tooLarge(ctx context.Context, subject, id string, c *sources.Change, size, limit int) error {
	key := sink.AppendCanonicalKey(nil, c.KeyValues())
	table := c.Table.QualifiedName()
	h.p.cfg.Metrics.deadLetter("too_large")
	h.p.log.Error("event larger than the NATS max payload: sent to the dead-letter subject instead; raise nats.max_payload (or max_payload of your NATS servers), then backfill the row with sluice backfill --filter",
		"table", table, "key", string(key), "op", string(c.Op), "pos", string(c.Pos), "bytes", size, "limit", limit)
	if h.skip.Has(id) {
		return ErrDeadLettered
	}
	msg, err := json.Marshal(struct {
		Reason  string          `json:"reason"`
		Table   string          `json:"table"`
		Key     json.RawMessage `json:"key"`
		Op      string          `json:"op"`
		Pos     string          `json:"pos"`
		Chunk   string          `json:"chunk,omitempty"`
		Subject string          `json:"subject"`
		Bytes   int             `json:"bytes"`
		Limit   int             `json:"limit"`
	}{"too_large", table, keyObject(c), string(c.Op), string(c.Pos), c.Chunk, subject, size, limit})
	if err != nil {
		return err
	}
	if err := h.send(ctx, h.p.dlqSubject(), id, msg); err != nil {
		return err
	}
	return ErrDeadLettered
}

// keyObject is c's key as in events: an object in key-column order.
func keyObject(c *sources.Change) []byte {
	obj := []byte{'{'}
	for i, v := range c.KeyValues() {
		if i > 0 {
			obj = append(obj, ',')
		}
		name, _ := json.Marshal(c.Table.Columns[c.Table.Key[i]]) // a string always marshals
		obj = append(obj, name...)
		obj = append(obj, ':')
		obj = append(obj, v...)
	}
	return append(obj, '}')
}

// breach handles an event that breaks its contract. The dead-letter
// message takes the event's place in its transaction's numbering (dlq),
// or follows it under the event's id with ":dlq" (warn), so replays
// number everything alike; halt stops before the event, so the checkpoint
// stays before its transaction.
func (h *handler) breach(ctx context.Context, c *sources.Change, subjects []string, policy string, reasons []string) error {
	table := c.Table.QualifiedName()
	key := string(sink.AppendCanonicalKey(nil, c.KeyValues()))
	if f := h.p.cfg.OnBreach; f != nil {
		f(table, policy)
	}
	if policy == schemas.Halt {
		return fmt.Errorf("%w: %s key %s at %s: %s. sluice stops before publishing it (contracts.%s.policy is halt); the checkpoint stays before this transaction: fix the row or the contract, then start sluice again",
			schemas.ErrContract, table, key, c.Pos, strings.Join(reasons, "; "), table)
	}
	part := sink.Partition(sink.AppendCanonicalKey(h.key[:0], c.KeyValues()), len(subjects))
	subject := subjects[part]
	event := h.p.enc.Event(c, time.Now())
	h.p.log.Warn("event breaks its data contract", "table", table, "key", key, "policy", policy, "reasons", strings.Join(reasons, "; "))
	var id ID
	if policy == schemas.Warn {
		published, err := h.publish(ctx, subject, part, c)
		if err != nil {
			return err
		}
		id = published.deadLetter()
	} else {
		id = h.ids.next(c.Pos)
	}
	return h.publishDLQ(ctx, id, table, policy, reasons, subject, event)
}

// breakingShape reports a new shape that breaks its table's contract,
// before any change of that shape is published: in the log, on the
// dead-letter subject, and, under halt, by stopping. id is the id of the
// shape's schema-change event.
func (h *handler) breakingShape(ctx context.Context, table *sources.Table, policy string, reasons []string, subject string, id ID, event []byte) error {
	qn := table.QualifiedName()
	if f := h.p.cfg.OnBreach; f != nil {
		f(qn, policy)
	}
	h.p.log.Error("breaking schema change: the new shape breaks the table's data contract", "table", qn,
		"version", table.Version, "policy", policy, "reasons", strings.Join(reasons, "; "))
	if policy == schemas.Halt {
		return fmt.Errorf("%w: %s version %d: %s. sluice stops before publishing a change of this shape (contracts.%s.policy is halt): change the contract to the new shape, then start sluice again",
			schemas.ErrContract, qn, table.Version, strings.Join(reasons, "; "), qn)
	}
	return h.publishDLQ(ctx, id.deadLetter(), qn, policy, reasons, subject, event)
}

// publishDLQ publishes a dead-letter message: the contract, the policy,
// the reasons, the subject the event was for and the event itself.
func (h *handler) publishDLQ(ctx context.Context, id ID, table, policy string, reasons []string, subject string, event []byte) error {
	sid := id.String()
	if h.skip.Has(sid) {
		return nil
	}
	msg, err := json.Marshal(struct {
		Contract string          `json:"contract"`
		Policy   string          `json:"policy"`
		Reasons  []string        `json:"reasons"`
		Subject  string          `json:"subject"`
		Event    json.RawMessage `json:"event"`
	}{table, policy, reasons, subject, event})
	if err != nil {
		return err
	}
	return h.send(ctx, h.p.dlqSubject(), sid, msg)
}
