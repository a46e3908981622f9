package schemas

import (
	"slices"
	"strconv"
	"strings"
)

// JSONSchema describes the row objects ("before", "after") of the shape's
// events, as JSON Schema 2020-12. Values follow DESIGN.md: numerics are
// exact decimal strings, timestamps RFC 3339, bytes base64. A NOT NULL
// column admits no null; only key columns are required (an unchanged
// TOASTed value may be absent).
func (s Shape) JSONSchema() map[string]any {
	props := make(map[string]any, len(s.Columns))
	for _, c := range s.Columns {
		t := columnSchema(c.Type)
		if types, ok := t["type"].([]string); ok && c.NotNull {
			t["type"] = slices.DeleteFunc(slices.Clone(types), func(s string) bool { return s == "null" })
		}
		t["x-sluice-type"] = c.Type
		props[c.Name] = t
	}
	return map[string]any{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"title":                s.Schema + "." + s.Table + " version " + strconv.Itoa(s.Version),
		"type":                 "object",
		"properties":           props,
		"required":             append([]string{}, s.Key...),
		"additionalProperties": false,
	}
}

// columnSchema maps a PostgreSQL or MySQL type name to the JSON form
// sluice writes for it.
func columnSchema(dbType string) map[string]any {
	t := strings.ToLower(dbType)
	if i := strings.IndexByte(t, '('); i >= 0 {
		t = t[:i]
	}
	t = strings.TrimSpace(strings.TrimSuffix(t, " unsigned"))
	nullable := func(typ string, more map[string]any) map[string]any {
		out := map[string]any{"type": []string{typ, "null"}}
		for k, v := range more {
			out[k] = v
		}
		return out
	}
	switch {
	case strings.HasPrefix(t, "_") || strings.HasSuffix(t, "[]"):
		return nullable("array", nil)
	}
	switch t {
	case "int2", "int4", "int8", "smallint", "integer", "bigint", "tinyint", "mediumint", "int", "year", "oid":
		return nullable("integer", nil)
	case "numeric", "decimal":
		return nullable("string", map[string]any{"pattern": `^(-?[0-9]+(\.[0-9]+)?|NaN|-?Infinity)$`})
	case "float4", "float8", "real", "double precision", "float", "double":
		// Non-finite values are written as the strings NaN, Infinity, -Infinity.
		return map[string]any{"type": []string{"number", "string", "null"}}
	case "bool", "boolean":
		return nullable("boolean", nil)
	case "date":
		return nullable("string", map[string]any{"format": "date"})
	case "timestamp", "timestamptz", "timestamp with time zone", "timestamp without time zone", "datetime":
		return nullable("string", map[string]any{"format": "date-time"})
	case "uuid":
		return nullable("string", map[string]any{"format": "uuid"})
	case "bytea", "blob", "tinyblob", "mediumblob", "longblob", "binary", "varbinary":
		return nullable("string", map[string]any{"contentEncoding": "base64"})
	case "json", "jsonb":
		return map[string]any{} // any JSON value
	case "text", "varchar", "character varying", "char", "character", "bpchar", "name", "citext",
		"tinytext", "mediumtext", "longtext", "enum", "set", "time", "timetz", "interval", "inet", "cidr", "macaddr":
		return nullable("string", nil)
	}
	// Types without a fixed JSON form here (user enums, domains, bit...)
	// admit any value rather than a wrong constraint.
	return map[string]any{}
}
