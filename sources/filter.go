package sources

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Filter is one condition of a backfill subset: a column, an operator and
// values. No SQL text crosses the network: drivers quote the column as an
// identifier, after checking that the table has it, and bind the values as
// parameters in their text form (the database converts them to the
// column's type).
type Filter struct {
	Column string   `json:"column"`
	Op     string   `json:"op"`
	Values []string `json:"values,omitempty"`
}

// Filter operators.
const (
	OpEq        = "="
	OpNe        = "<>"
	OpLt        = "<"
	OpLe        = "<="
	OpGt        = ">"
	OpGe        = ">="
	OpIn        = "in"
	OpIsNull    = "is null"
	OpIsNotNull = "is not null"
)

// Limits of a filter list: a request must stay a small, cheap query.
const (
	MaxFilters     = 16
	MaxFilterIn    = 1000
	MaxFilterValue = 4096 // bytes
)

// ErrBadFilter wraps every problem of a filter; its text names the fix.
var ErrBadFilter = errors.New("bad backfill filter")

// ErrStatementTimeout: the server cancelled a chunk's SELECT when it ran
// past ChunkQuery.Timeout. Reading the same chunk again would time out
// again, so it is not a transient error.
var ErrStatementTimeout = errors.New("the chunk's SELECT ran past backfill.statement_timeout")

var filterOps = []string{OpEq, OpNe, OpLt, OpLe, OpGt, OpGe, OpIn, OpIsNull, OpIsNotNull}

// ValidateFilters checks filters against the columns of table: a known
// column named exactly, a known operator, and the number of values the
// operator takes, within the limits.
func ValidateFilters(table string, columns []string, filters []Filter) error {
	if len(filters) > MaxFilters {
		return fmt.Errorf("%w: %d filters, at most %d", ErrBadFilter, len(filters), MaxFilters)
	}
	for _, f := range filters {
		if !slices.Contains(columns, f.Column) {
			hint := ""
			for _, c := range columns {
				if strings.EqualFold(c, f.Column) {
					hint = fmt.Sprintf(" (did you mean %s? names are case-sensitive)", c)
				}
			}
			return fmt.Errorf("%w: table %s has no column %q%s; its columns: %s", ErrBadFilter, table, f.Column, hint, strings.Join(columns, ", "))
		}
		if err := f.checkValues(); err != nil {
			return err
		}
	}
	return nil
}

func (f Filter) checkValues() error {
	want := 1
	switch f.Op {
	case OpEq, OpNe, OpLt, OpLe, OpGt, OpGe:
	case OpIsNull, OpIsNotNull:
		want = 0
	case OpIn:
		if len(f.Values) == 0 || len(f.Values) > MaxFilterIn {
			return fmt.Errorf("%w: %s in takes 1 to %d values, not %d", ErrBadFilter, f.Column, MaxFilterIn, len(f.Values))
		}
		want = len(f.Values)
	default:
		return fmt.Errorf("%w: operator %q of column %s: use one of %s", ErrBadFilter, f.Op, f.Column, strings.Join(filterOps, ", "))
	}
	if len(f.Values) != want {
		return fmt.Errorf("%w: %s %s takes %d value(s), not %d", ErrBadFilter, f.Column, f.Op, want, len(f.Values))
	}
	for _, v := range f.Values {
		if len(v) > MaxFilterValue {
			return fmt.Errorf("%w: a value for %s is %d bytes, at most %d", ErrBadFilter, f.Column, len(v), MaxFilterValue)
		}
	}
	return nil
}

// String is the filter in the form ParseFilter reads.
func (f Filter) String() string {
	switch f.Op {
	case OpIsNull, OpIsNotNull:
		return f.Column + " " + f.Op
	case OpIn:
		return f.Column + " in " + strings.Join(f.Values, ",")
	}
	return f.Column + " " + f.Op + " " + strings.Join(f.Values, "")
}

// ParseFilter reads the CLI form of a filter: "COLUMN OP VALUE", where OP
// is =, <>, !=, <, <=, >, >=; "COLUMN in V1,V2,..."; "COLUMN is null" or
// "COLUMN is not null". The value is the rest of the text, taken literally
// (no quotes needed: "region = eu west" compares with "eu west").
func ParseFilter(s string) (Filter, error) {
	s = strings.TrimSpace(s)
	col, rest, ok := strings.Cut(s, " ")
	if op := strings.IndexAny(s, "=<>!"); op > 0 && (!ok || op < len(col)) {
		col, rest = s[:op], s[op:]
	}
	col, rest = strings.TrimSpace(col), strings.TrimSpace(rest)
	if col == "" || rest == "" {
		return Filter{}, fmt.Errorf("%w: %q: write COLUMN OP VALUE, e.g. \"region = eu\", \"id in 1,2,3\" or \"deleted_at is null\"", ErrBadFilter, s)
	}
	lower := strings.ToLower(rest)
	switch {
	case strings.Join(strings.Fields(lower), " ") == OpIsNull:
		return Filter{Column: col, Op: OpIsNull}, nil
	case strings.Join(strings.Fields(lower), " ") == OpIsNotNull:
		return Filter{Column: col, Op: OpIsNotNull}, nil
	case strings.HasPrefix(lower, "in ") || strings.HasPrefix(lower, "in\t"):
		var vals []string
		for _, v := range strings.Split(rest[3:], ",") {
			vals = append(vals, strings.TrimSpace(v))
		}
		return Filter{Column: col, Op: OpIn, Values: vals}, nil
	}
	for _, op := range []string{"<=", ">=", "<>", "!=", "=", "<", ">"} {
		if v, ok := strings.CutPrefix(rest, op); ok {
			if op == "!=" {
				op = OpNe
			}
			return Filter{Column: col, Op: op, Values: []string{strings.TrimSpace(v)}}, nil
		}
	}
	return Filter{}, fmt.Errorf("%w: %q: no operator; use =, <>, <, <=, >, >=, in, is null or is not null", ErrBadFilter, s)
}

// DBError is a database error reduced to what cannot quote a row value:
// the SQLSTATE (MySQL: its error number too) and a fixed description of
// the condition. Database messages may carry values ("invalid input syntax
// for type integer: \"...\"", a duplicate key's value); job records, replies
// and logs keep this instead. The original stays reachable with errors.As
// for code that needs it, never through Error.
type DBError struct {
	State string // SQLSTATE
	Code  int    // MySQL error number; 0 for PostgreSQL
	Desc  string // what went wrong, without values
	Err   error
}

func (e *DBError) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("%s (MySQL error %d, SQLSTATE %s)", e.Desc, e.Code, e.State)
	}
	return fmt.Sprintf("%s (SQLSTATE %s)", e.Desc, e.State)
}

func (e *DBError) Unwrap() error { return e.Err }

// ValueFree returns err with the text of the database error db stands for
// replaced by db's own, value-free text. raw is that error's Error() and
// quoted its message parts (message, detail) that could appear in err's
// text some other way: if one still does, only db's text is kept. errors.Is
// and errors.As see both db (and through it the driver's error) and err's
// own chain, so classification (ErrDisconnected and the like) still works.
func ValueFree(err error, db *DBError, raw string, quoted ...string) error {
	var done *valueFreeError
	if errors.As(err, &done) {
		return err
	}
	msg := strings.ReplaceAll(err.Error(), raw, db.Error())
	rest := strings.ReplaceAll(msg, db.Error(), "")
	for _, q := range quoted {
		if q != "" && strings.Contains(rest, q) {
			msg = db.Error()
		}
	}
	return &valueFreeError{msg: msg, db: db, err: err}
}

type valueFreeError struct {
	msg string
	db  *DBError
	err error
}

func (e *valueFreeError) Error() string   { return e.msg }
func (e *valueFreeError) Unwrap() []error { return []error{e.db, e.err} }
