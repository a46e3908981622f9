package postgres

import (
	"strings"

	"github.com/sluice-cdc/sluice/sources"
)

// valueKind maps a type name as typeName gives it (pg_type's typname; the
// SQL spellings are there too, for names read from elsewhere) to the kind
// of the JSON its decoder writes. Types without a fixed JSON form (user
// enums, domains, ranges, bit strings, oid:N) are KindOther.
func valueKind(typeName string) sources.Kind {
	t := strings.ToLower(typeName)
	if strings.HasPrefix(t, "_") || strings.HasSuffix(t, "[]") {
		return sources.KindArray
	}
	switch t {
	case "int2", "int4", "int8", "smallint", "integer", "int", "bigint", "oid":
		return sources.KindInteger
	case "numeric", "decimal":
		return sources.KindDecimal
	case "float4", "float8", "real", "double precision", "float":
		return sources.KindFloat
	case "bool", "boolean":
		return sources.KindBool
	case "date":
		return sources.KindDate
	case "time", "timetz":
		return sources.KindTime
	case "timestamp", "timestamptz", "timestamp with time zone", "timestamp without time zone":
		return sources.KindTimestamp
	case "uuid":
		return sources.KindUUID
	case "bytea":
		return sources.KindBytes
	case "json", "jsonb":
		return sources.KindJSON
	case "text", "varchar", "character varying", "char", "character", "bpchar", "name", "citext",
		"interval", "inet", "cidr", "macaddr":
		return sources.KindString
	}
	return sources.KindOther
}
