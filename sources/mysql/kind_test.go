package mysql

import (
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

// Every DATA_TYPE the JSON Schema knew before kinds existed keeps its
// form.
func TestValueKind(t *testing.T) {
	want := map[sources.Kind][]string{
		sources.KindInteger:   {"tinyint", "smallint", "mediumint", "int", "bigint", "year"},
		sources.KindDecimal:   {"decimal"},
		sources.KindFloat:     {"float", "double"},
		sources.KindDate:      {"date"},
		sources.KindTime:      {"time"},
		sources.KindTimestamp: {"datetime", "timestamp"},
		sources.KindUUID:      {"uuid"},
		sources.KindBytes:     {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"},
		sources.KindJSON:      {"json"},
		sources.KindString:    {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"},
		sources.KindOther:     {"bit", "geometry", "inet6", "", "int4", "jsonb", "bytea"},
	}
	for kind, names := range want {
		for _, name := range names {
			if got := valueKind(name); got != kind {
				t.Errorf("valueKind(%q) = %q, want %q", name, got, kind)
			}
		}
	}
}
