package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sources"
)

// Type names come from the stream: only names of a fixed list pass into
// DDL as themselves; anything else, hostile or not, is typed by its kind.
func TestColumnType(t *testing.T) {
	for _, tc := range []struct {
		col  schemas.Column
		want string
	}{
		{schemas.Column{Type: "int4", Kind: sources.KindInteger}, "integer"},
		{schemas.Column{Type: "int8", Kind: sources.KindInteger}, "bigint"},
		{schemas.Column{Type: "numeric", Kind: sources.KindDecimal}, "numeric"},
		{schemas.Column{Type: "varchar", Kind: sources.KindString}, "text"},
		{schemas.Column{Type: "timestamptz", Kind: sources.KindTimestamp}, "timestamptz"},
		{schemas.Column{Type: "timestamp", Kind: sources.KindTimestamp}, "timestamp"},
		{schemas.Column{Type: "_text", Kind: sources.KindArray}, "jsonb"},
		{schemas.Column{Type: "bytea", Kind: sources.KindBytes}, "bytea"},
		{schemas.Column{Type: "tinyint", Kind: sources.KindInteger}, "bigint"},         // MySQL
		{schemas.Column{Type: "datetime", Kind: sources.KindTimestamp}, "timestamptz"}, // MySQL
		{schemas.Column{Type: "time", Kind: sources.KindTime}, "text"},                 // MySQL TIME runs past 24h
		{schemas.Column{Type: "mood", Kind: sources.KindOther}, "text"},
		{schemas.Column{Type: "int); DROP TABLE items; --", Kind: sources.KindInteger}, "bigint"},
		{schemas.Column{Type: "text); DROP TABLE items; --"}, "text"},
	} {
		if got := columnType(tc.col); got != tc.want {
			t.Errorf("columnType(%q, %q) = %q, want %q", tc.col.Type, tc.col.Kind, got, tc.want)
		}
	}
}

func TestCompatible(t *testing.T) {
	for _, tc := range []struct {
		typ  string
		col  schemas.Column
		want bool
	}{
		{"int4", schemas.Column{Kind: sources.KindInteger}, true},
		{"int8", schemas.Column{Kind: sources.KindInteger}, true},
		{"numeric", schemas.Column{Kind: sources.KindInteger}, true},
		{"text", schemas.Column{Kind: sources.KindDecimal}, true},
		{"jsonb", schemas.Column{Kind: sources.KindArray}, true},
		{"int4", schemas.Column{Kind: sources.KindString}, false},
		{"bool", schemas.Column{Kind: sources.KindInteger}, false},
		{"timestamptz", schemas.Column{Kind: sources.KindDate}, false},
	} {
		c := &column{typ: tc.typ, kind: kindOfType(tc.typ)}
		if got := compatible(c, tc.col); got != tc.want {
			t.Errorf("compatible(%s, %s) = %v, want %v", tc.typ, tc.col.Kind, got, tc.want)
		}
	}
}

// Only failures that pass are tried again; a data or schema error stops
// the member instead of looping on it.
func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "40P01"}, true}, // deadlock
		{&pgconn.PgError{Code: "57P01"}, true}, // admin shutdown
		{&pgconn.PgError{Code: "08006"}, true},
		{fmt.Errorf("upsert: %w", io.ErrUnexpectedEOF), true},
		{&pgconn.PgError{Code: "23502"}, false}, // not null violation
		{&pgconn.PgError{Code: "42703"}, false}, // undefined column
		{errors.New("table public.items does not exist in the target"), false},
	} {
		if got := transient(tc.err); got != tc.want {
			t.Errorf("transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// Table names reach a subject (the table's _schema subject, read for its
// shape): a name that is no single subject token would read another
// table's shape, or many. Such an event is refused before any lookup.
func TestTableNameNotASubjectToken(t *testing.T) {
	for _, name := range []string{"a*", "a.b", ">", "a b", ""} {
		var ev consumer.Event
		ev.Op, ev.Source.Schema, ev.Source.Table = "c", "public", name
		if _, err := (&batch{}).table(context.Background(), &ev); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("table %q: %v, want it refused", name, err)
		}
	}
}
