package capture

import (
	"context"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// versioned returns the registered version of c's table shape. A shape
// new to a table that had others is announced first: its schema-change
// event is stored before the shape is registered and before any change of
// it is published, so a crash in between announces it again under the
// same message id.
func (h *handler) versioned(ctx context.Context, c *sources.Change) (*sources.Table, error) {
	// Checked before the registry sees the shape: its schema-change event
	// would go out on a subject built from these names, ahead of the rows
	// that subjects refuses.
	if err := subjectTokens(c.Table); err != nil {
		return nil, err
	}
	r := h.p.cfg.Schemas
	table, ch, err := r.Observe(ctx, c.Table)
	if err != nil || ch == nil {
		return table, err
	}
	body, err := ch.EventBody()
	if err != nil {
		return nil, err
	}
	at := *c
	at.Table = table
	subject := h.p.cfg.Prefix + "." + h.p.cfg.SourceName + "." + table.Schema + "." + table.Name + "._schema"
	// Not numbered in its transaction: a replay after the shape is
	// registered publishes no event, and must number the changes alike.
	id := schemaID(h.p.cfg.SourceName, table.QualifiedName(), ch.New.Version)
	event := h.p.enc.AppendSchemaEvent(nil, &at, body, time.Now())
	if sid := id.String(); !h.skip.Has(sid) {
		if err := h.send(ctx, subject, sid, event); err != nil {
			return nil, err
		}
	}
	if k := h.p.cfg.Contracts; k != nil {
		if policy, reasons := k.CheckShape(ch.Old, ch.New); len(reasons) > 0 {
			if err := h.breakingShape(ctx, table, policy, reasons, subject, id, event); err != nil {
				return nil, err
			}
		}
	}
	if err := h.p.pub.Flush(ctx); err != nil {
		return nil, err
	}
	if err := r.Register(ctx, ch); err != nil {
		return nil, err
	}
	h.p.log.Info("table shape changed: schema-change event published", "table", table.QualifiedName(),
		"from_version", ch.Old.Version, "to_version", ch.New.Version, "subject", subject)
	return table, nil
}

// inForce records the version of t as the one in force for its table,
// for the checkpoint (checkpoint.Checkpoint.SchemaVersions).
func (h *handler) inForce(t *sources.Table) {
	if t == h.inForceLast {
		return
	}
	h.inForceLast = t
	qn := t.QualifiedName()
	if v, ok := h.versions[qn]; ok && v == t.Version {
		return
	}
	m := make(map[string]int, len(h.versions)+1)
	for k, v := range h.versions {
		m[k] = v
	}
	m[qn] = t.Version
	h.versions, h.versionsMoved = m, true
}
