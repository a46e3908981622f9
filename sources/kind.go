package sources

// Kind is the logical kind of a column's values: the JSON form a change
// gives them (DESIGN.md "The event"). Each driver maps its own type names
// to kinds, so the schemas, the backfill and the sink read a column's
// form without knowing any database's type names.
type Kind string

// The kinds. The zero Kind is unknown: a Table built without Kinds, or a
// shape registered before kinds existed; it reads as KindOther.
const (
	KindInteger Kind = "integer" // a JSON number without fraction
	// KindDecimal is an exact decimal string, or NaN, Infinity, -Infinity.
	KindDecimal Kind = "decimal"
	// KindFloat is a JSON number, or the string NaN, Infinity or -Infinity.
	KindFloat Kind = "float"
	KindBool  Kind = "boolean"
	// KindString is text, and any value written as its text: intervals,
	// network addresses, enum and set labels.
	KindString Kind = "string"
	KindBytes  Kind = "bytes" // base64
	KindDate   Kind = "date"  // YYYY-MM-DD
	// KindTime is a time of day (or MySQL's TIME duration) as text: no
	// fixed format, since MySQL's runs from -838:59:59 to 838:59:59.
	KindTime      Kind = "time"
	KindTimestamp Kind = "timestamp" // RFC 3339
	KindUUID      Kind = "uuid"
	KindJSON      Kind = "json" // the document itself: any JSON value
	KindArray     Kind = "array"
	// KindOther is a type without a fixed JSON form (user enums, domains,
	// bit strings...): its values may be anything.
	KindOther Kind = "other"
)

// ColumnKind is the kind of column i, or the zero Kind when the source
// gave none (a Table built without Kinds).
func (t *Table) ColumnKind(i int) Kind {
	if i < 0 || i >= len(t.Kinds) {
		return ""
	}
	return t.Kinds[i]
}
