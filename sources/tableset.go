package sources

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// TableSet is source.tables and source.exclude: which tables a source
// captures. An entry of source.tables is a name (schema.table, db.table
// for MySQL) or a pattern in path.Match syntax. Schema and table are
// matched apart, so that a * never crosses the dot: public.* is every
// table of public, never a table of another schema.
type TableSet struct {
	listed   []string // names, in config order
	patterns []tablePattern
	exclude  []tablePattern
}

type tablePattern struct{ schema, table string }

func (p tablePattern) match(qn string) bool {
	schema, table, ok := strings.Cut(qn, ".")
	if !ok {
		return false
	}
	s, _ := path.Match(p.schema, schema)
	t, _ := path.Match(p.table, table)
	return s && t
}

// IsTablePattern tells whether a source.tables entry is a pattern rather
// than a table's name.
func IsTablePattern(entry string) bool { return strings.ContainsAny(entry, `*?[\`) }

// CheckTableEntry tells what is wrong with one entry of setting
// (source.tables or source.exclude), "" when nothing.
func CheckTableEntry(setting, entry string) string {
	schema, table, ok := strings.Cut(entry, ".")
	if !ok || schema == "" || table == "" || strings.Contains(table, ".") {
		return fmt.Sprintf("%s: %q is not schema.table (db.table for mysql); a pattern such as public.* or shop.order_* matches schema and table apart", setting, entry)
	}
	for _, part := range []string{schema, table} {
		if _, err := path.Match(part, ""); err != nil {
			return fmt.Sprintf("%s: %q is not a valid pattern (%v): use * for any run of characters, ? for one, [abc] or [a-z] for a set, and \\ to quote one of them", setting, entry, err)
		}
	}
	return ""
}

// NewTableSet reads source.tables and source.exclude; the error lists
// every bad entry.
func NewTableSet(tables, exclude []string) (TableSet, error) {
	var s TableSet
	var problems []string
	for _, e := range tables {
		if p := CheckTableEntry("source.tables", e); p != "" {
			problems = append(problems, p)
			continue
		}
		schema, table, _ := strings.Cut(e, ".")
		if IsTablePattern(e) {
			s.patterns = append(s.patterns, tablePattern{schema, table})
		} else if !slices.Contains(s.listed, e) {
			s.listed = append(s.listed, e)
		}
	}
	for _, e := range exclude {
		if p := CheckTableEntry("source.exclude", e); p != "" {
			problems = append(problems, p)
			continue
		}
		schema, table, _ := strings.Cut(e, ".")
		s.exclude = append(s.exclude, tablePattern{schema, table})
	}
	if len(problems) > 0 {
		return TableSet{}, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return s, nil
}

// Everything tells that source.tables is empty: the driver's default
// scope, minus source.exclude.
func (s TableSet) Everything() bool { return len(s.listed) == 0 && len(s.patterns) == 0 }

// HasPatterns tells whether tables created later may join.
func (s TableSet) HasPatterns() bool { return len(s.patterns) > 0 }

// Excluded tells whether source.exclude removes table qn.
func (s TableSet) Excluded(qn string) bool {
	return slices.ContainsFunc(s.exclude, func(p tablePattern) bool { return p.match(qn) })
}

// Listed is the tables source.tables names literally, less the excluded:
// each must exist and have a key.
func (s TableSet) Listed() []string {
	var out []string
	for _, qn := range s.listed {
		if !s.Excluded(qn) {
			out = append(out, qn)
		}
	}
	return out
}

// Matches tells whether a pattern takes in table qn: a table a pattern
// finds is captured when it has a key and skipped with a warning when not.
// A table whose name cannot be a subject token is never taken in (Unfit):
// anyone who may create a table must not be able to stop sluice with it.
func (s TableSet) Matches(qn string) bool {
	return s.matched(qn) && !s.Unfit(qn)
}

// Unfit tells whether a pattern matches table qn but its schema or name
// cannot be a NATS subject token, so its events would have no subject.
func (s TableSet) Unfit(qn string) bool {
	schema, name, _ := strings.Cut(qn, ".")
	return s.matched(qn) && (!SubjectToken(schema) || !SubjectToken(name))
}

func (s TableSet) matched(qn string) bool {
	return !slices.Contains(s.listed, qn) && !s.Excluded(qn) &&
		slices.ContainsFunc(s.patterns, func(p tablePattern) bool { return p.match(qn) })
}

// SubjectToken tells whether tok can be one token of a NATS subject: the
// schema and table names are tokens of their tables' subjects.
func SubjectToken(tok string) bool {
	return tok != "" && !strings.ContainsAny(tok, ".*> \t\r\n")
}

// UnfitWarning is the warning for a table Unfit leaves out.
const UnfitWarning = "table matches source.tables but its name cannot be a NATS subject token (no '.', '*', '>' or whitespace): not captured; rename it, or leave it out with source.exclude"
