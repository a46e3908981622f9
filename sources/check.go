package sources

import (
	"errors"
	"strings"
)

// Plain returns an error's message without the leading names of this
// package's sentinel errors, for lists of problems that already say what
// kind they are.
func Plain(err error) string {
	msg := err.Error()
	for _, s := range []error{ErrPrerequisite, ErrNoPrimaryKey, ErrDisconnected, ErrLogLost, ErrLoginRejected, ErrUnsupportedKey, ErrTLS} {
		if errors.Is(err, s) {
			msg = strings.ReplaceAll(msg, s.Error()+": ", "")
		}
	}
	return msg
}

// KeyInfo is the key a captured table's events carry and why sluice chose
// it, so an operator sees before the first event which columns partition
// the table and what a change of them means.
type KeyInfo struct {
	Table   string   // schema.table, db.table for MySQL
	Columns []string // in key order: the order of the event's key and partition hash
	From    string   // "primary key", "unique index items_code_key" or "source.keys"
	Why     string   // what makes a key other than the primary key usable; empty for a primary key
}

// Catalog is what sluice check shows of the source beyond its problems:
// each captured table, and notes that stop nothing but an operator should
// know (whether the log position survives a failover).
type Catalog struct {
	Tables []CapturedTable
	Notes  []string
}

// CapturedTable is what sluice check shows of a captured table: its key
// and its columns (for privacy coverage).
type CapturedTable struct {
	Key     KeyInfo
	Columns []string
}

// String reads like "unique index items_code_key (code), replica identity USING INDEX".
func (k KeyInfo) String() string {
	s := k.From + " (" + strings.Join(k.Columns, ", ") + ")"
	if k.Why != "" {
		s += ", " + k.Why
	}
	return s
}
