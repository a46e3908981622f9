package postgres

import (
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

// Every PostgreSQL type name the JSON Schema knew before kinds existed
// keeps its form; names of other databases are no PostgreSQL type, so a
// user type named like one has no fixed form.
func TestValueKind(t *testing.T) {
	want := map[sources.Kind][]string{
		sources.KindInteger:   {"int2", "int4", "int8", "smallint", "integer", "int", "bigint", "oid"},
		sources.KindDecimal:   {"numeric", "decimal"},
		sources.KindFloat:     {"float4", "float8", "real", "double precision", "float"},
		sources.KindBool:      {"bool", "boolean"},
		sources.KindDate:      {"date"},
		sources.KindTime:      {"time", "timetz"},
		sources.KindTimestamp: {"timestamp", "timestamptz", "timestamp with time zone", "timestamp without time zone"},
		sources.KindUUID:      {"uuid", "UUID"},
		sources.KindBytes:     {"bytea"},
		sources.KindJSON:      {"json", "jsonb"},
		sources.KindString: {"text", "varchar", "character varying", "char", "character", "bpchar", "name", "citext",
			"interval", "inet", "cidr", "macaddr"},
		sources.KindArray: {"_int4", "_text", "_mood", "integer[]"},
		sources.KindOther: {"mood", "bit", "int4range", "tsvector", "oid:16390", "", "tinyint", "blob", "datetime"},
	}
	for kind, names := range want {
		for _, name := range names {
			if got := valueKind(name); got != kind {
				t.Errorf("valueKind(%q) = %q, want %q", name, got, kind)
			}
		}
	}
}
