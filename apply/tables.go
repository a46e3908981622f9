package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sources"
)

// table returns the target table of ev, checked against the newest shape
// the stream announced for it when ev's schema_version is newer than the
// one it was checked against.
func (b *batch) table(ctx context.Context, ev *consumer.Event) (*table, error) {
	for _, name := range []string{ev.Source.Schema, ev.Source.Table} {
		if name == "" || strings.ContainsAny(name, ".*> \t\r\n") {
			return nil, fmt.Errorf("event names table %q.%q, which is no subject token: refused", ev.Source.Schema, ev.Source.Table)
		}
	}
	q := ev.Source.Schema + "." + ev.Source.Table
	if t := b.ddl[q]; t != nil && t.version >= ev.SchemaVersion {
		return t, nil
	}
	if t := b.a.knownTable(q); t != nil && t.version >= ev.SchemaVersion {
		return t, nil
	}
	return b.check(ctx, ev)
}

// ddlLock serializes the members' changes to the target's tables (it
// lasts until the transaction ends); whoever waited reads the catalog
// again after it.
const ddlLock = `SELECT pg_advisory_xact_lock(hashtext('sluice apply ddl'))`

// check reads ev's table from the target and reconciles it with the
// newest shape on the stream: a missing table is created (Create), a
// column the source added is added, anything else that differs is an
// error naming the difference.
func (b *batch) check(ctx context.Context, ev *consumer.Event) (*table, error) {
	schema, name := ev.Source.Schema, ev.Source.Table
	q := schema + "." + name
	keyCols, _, err := consumer.ParseKey(ev.Key)
	if err != nil && ev.Op != "t" && ev.Op != "chunk" {
		return nil, err
	}
	shape, err := b.a.latestShape(ctx, schema, name)
	if err != nil {
		return nil, err
	}
	if shape != nil && len(shape.Key) > 0 {
		if keyCols != nil && !slices.Equal(keyCols, shape.Key) {
			return nil, fmt.Errorf("%s: the event's key (%s) is not the shape's (%s)", q, strings.Join(keyCols, ", "), strings.Join(shape.Key, ", "))
		}
		keyCols = shape.Key
	}
	if keyCols == nil {
		return nil, fmt.Errorf("%s: a %s event came before any row of the table and no shape of it is on the stream: its key is unknown", q, ev.Op)
	}
	locked := false
	lock := func() error {
		if locked {
			return nil
		}
		locked = true
		_, err := b.tx.Exec(ctx, ddlLock)
		return err
	}
	t, err := readTable(ctx, b.tx, schema, name)
	if err != nil {
		return nil, err
	}
	if t == nil {
		if !b.a.cfg.Create {
			return nil, fmt.Errorf("table %s does not exist in the target: create it (`sluice schema --shape %s` prints the source's columns), or run apply with --create", q, q)
		}
		if shape == nil {
			return nil, fmt.Errorf("--create: no shape of %s is on the stream (subject %s): sluice announces a table's shape when it first captures it; "+
				"a table captured by an older sluice has none, so create it in the target yourself", q, b.a.shapeSubject(schema, name))
		}
		if err := lock(); err != nil {
			return nil, err
		}
		if t, err = readTable(ctx, b.tx, schema, name); err != nil {
			return nil, err
		}
		if t == nil {
			if err := createTable(ctx, b.tx, *shape); err != nil {
				return nil, err
			}
			b.a.cfg.Log.Info("apply: created table", "table", q, "shape_version", shape.Version)
			if t, err = readTable(ctx, b.tx, schema, name); err != nil {
				return nil, err
			}
			b.ddl[q] = t
		}
	}
	for _, k := range keyCols {
		if t.columns[k] == nil {
			return nil, fmt.Errorf("%s has no key column %s in the target", q, k)
		}
	}
	ok, err := uniqueOn(ctx, b.tx, t, keyCols)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s in the target has no primary key or unique index on (%s), the source's key: add one", q, strings.Join(keyCols, ", "))
	}
	if shape != nil {
		var added []schemas.Column
		for _, c := range shape.Columns {
			have := t.columns[c.Name]
			if have == nil {
				if c.NotNull && !c.Key {
					return nil, fmt.Errorf("%s: column %s is NOT NULL at the source (shape version %d) but missing in the target: add it to the target yourself (apply adds nullable columns only)",
						q, c.Name, shape.Version)
				}
				added = append(added, c)
				continue
			}
			if !compatible(have, c) {
				return nil, fmt.Errorf("%s: column %s is %s in the target but %s (%s) at the source (shape version %d): alter the target column, then start apply again",
					q, c.Name, have.typ, c.Type, kindOf(c), shape.Version)
			}
		}
		for _, col := range t.order {
			if slices.ContainsFunc(shape.Columns, func(c schemas.Column) bool { return c.Name == col }) {
				continue
			}
			if t.columns[col].notNull {
				return nil, fmt.Errorf("%s: column %s is NOT NULL without a default in the target but the source has no such column (shape version %d): drop it or give it a default",
					q, col, shape.Version)
			}
			if !t.dropped[col] {
				t.dropped[col] = true
				b.a.cfg.Log.Warn("apply: the target has a column the source does not; new rows leave it null", "table", q, "column", col)
			}
		}
		if len(added) > 0 {
			if err := lock(); err != nil {
				return nil, err
			}
			for _, c := range added {
				if err := addColumn(ctx, b.tx, t, c); err != nil {
					return nil, err
				}
				b.a.cfg.Log.Info("apply: added a column the source added", "table", q, "column", c.Name, "shape_version", shape.Version)
			}
			dropped := t.dropped
			if t, err = readTable(ctx, b.tx, schema, name); err != nil {
				return nil, err
			}
			t.dropped = dropped
			b.ddl[q] = t
		}
	}
	t.key = keyCols
	t.version = ev.SchemaVersion
	if shape != nil {
		t.version = max(t.version, shape.Version)
	}
	if b.ddl[q] == nil {
		b.a.setTable(q, t)
	} else {
		b.ddl[q] = t
	}
	return t, nil
}

// compatible tells whether a target column takes a source column's
// values without loss.
func compatible(have *column, c schemas.Column) bool {
	want := kindOf(c)
	if have.kind == want {
		return true
	}
	switch have.typ {
	case "text", "varchar", "bpchar":
		// Text holds any value's text.
		return true
	case "json", "jsonb":
		return want == sources.KindArray || want == sources.KindJSON || want == sources.KindOther
	case "numeric":
		return want == sources.KindInteger || want == sources.KindDecimal
	}
	return false
}

func kindOf(c schemas.Column) sources.Kind {
	if c.Kind == "" {
		return sources.KindOther
	}
	return c.Kind
}

func (a *applier) shapeSubject(schema, table string) string {
	return a.cfg.Prefix + "." + a.cfg.Source + "." + schema + "." + table + "._schema"
}

// latestShape returns the newest shape of schema.table announced on the
// stream (its last schema-change event), or nil when none was.
func (a *applier) latestShape(ctx context.Context, schema, table string) (*schemas.Shape, error) {
	msg, err := a.stream.GetLastMsgForSubject(ctx, a.shapeSubject(schema, table))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the shape of %s.%s from the stream: %w", schema, table, err)
	}
	var ev struct {
		Schema struct {
			New schemas.Shape `json:"new"`
		} `json:"schema"`
	}
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		return nil, fmt.Errorf("schema-change event of %s.%s: %w", schema, table, err)
	}
	s := ev.Schema.New
	if s.Schema != schema || s.Table != table || len(s.Columns) == 0 {
		return nil, fmt.Errorf("schema-change event on %s describes %s.%s with %d columns: refused", msg.Subject, s.Schema, s.Table, len(s.Columns))
	}
	return &s, nil
}
