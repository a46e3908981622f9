package schemas

import (
	"slices"
	"strconv"

	"github.com/sluice-cdc/sluice/sources"
)

// JSONSchema describes the row objects ("before", "after") of the shape's
// events, as JSON Schema 2020-12. Values follow DESIGN.md: numerics are
// exact decimal strings, timestamps RFC 3339, bytes base64. A NOT NULL
// column admits no null; only key columns are required (an unchanged
// TOASTed value may be absent).
func (s Shape) JSONSchema() map[string]any {
	props := make(map[string]any, len(s.Columns))
	for _, c := range s.Columns {
		t := columnSchema(c.Kind)
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

// WithKinds returns s with each column that has no kind given kindOf of
// its type: the source driver's Driver.KindOf, for a shape registered
// before kinds existed, whose JSON Schema would otherwise constrain
// nothing. s is left as it is.
func (s Shape) WithKinds(kindOf func(typeName string) sources.Kind) Shape {
	s.Columns = slices.Clone(s.Columns)
	for i, c := range s.Columns {
		if c.Kind == "" {
			s.Columns[i].Kind = kindOf(c.Type)
		}
	}
	return s
}

// columnSchema is the JSON form sluice writes for values of a kind.
func columnSchema(kind sources.Kind) map[string]any {
	nullable := func(typ string, more map[string]any) map[string]any {
		out := map[string]any{"type": []string{typ, "null"}}
		for k, v := range more {
			out[k] = v
		}
		return out
	}
	switch kind {
	case sources.KindArray:
		return nullable("array", nil)
	case sources.KindInteger:
		return nullable("integer", nil)
	case sources.KindDecimal:
		return nullable("string", map[string]any{"pattern": `^(-?[0-9]+(\.[0-9]+)?|NaN|-?Infinity)$`})
	case sources.KindFloat:
		// Non-finite values are written as the strings NaN, Infinity, -Infinity.
		return map[string]any{"type": []string{"number", "string", "null"}}
	case sources.KindBool:
		return nullable("boolean", nil)
	case sources.KindDate:
		return nullable("string", map[string]any{"format": "date"})
	case sources.KindTimestamp:
		return nullable("string", map[string]any{"format": "date-time"})
	case sources.KindUUID:
		return nullable("string", map[string]any{"format": "uuid"})
	case sources.KindBytes:
		return nullable("string", map[string]any{"contentEncoding": "base64"})
	case sources.KindJSON:
		return map[string]any{} // any JSON value
	case sources.KindString, sources.KindTime:
		// No "time" format: MySQL's TIME is a duration up to 838:59:59.
		return nullable("string", nil)
	}
	// KindOther and unknown kinds (a shape registered before kinds
	// existed) admit any value rather than a wrong constraint.
	return map[string]any{}
}
