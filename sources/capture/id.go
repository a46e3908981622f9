package capture

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sluice-cdc/sluice/sources"
)

// ID is the message id (Nats-Msg-Id) of a message the pipeline publishes.
// A replay after a crash or a reconnect gives every message the id it had
// the first time, and skips those the stream holds (sink.StoredIDs), so
// consumers get each message once. Its forms:
//
//	<source>:<pos>:<index>             a transaction's index-th message
//	<source>:schema:<table>:<version>  a table version's schema-change event
//
// each followed by ":dlq" for the dead letter that comes after that
// message (a warn contract, a breaking shape). A source name holds no ':'
// (config), a position may (MySQL's file:offset). Every id but a dead
// letter's ends in a number, which lets sink.StoredIDs keep the ids of one
// transaction as a range of indexes.
type ID struct {
	Source string
	// Pos is the position of the message's transaction, Index its place
	// in it: every message the transaction puts on the stream, whether
	// from the log, the backfill tap or in place of an event (a dead
	// letter), takes the next index.
	Pos   sources.Position
	Index int
	// Table ("schema.table") and Version are set for a schema-change
	// event: it is not numbered in its transaction, as a replay after the
	// version is registered publishes no event.
	Table   string
	Version int
	// DLQ marks the dead letter that follows the message named by the
	// rest of the id.
	DLQ bool
}

// schemaID is the id of the schema-change event of a table's version.
func schemaID(source, table string, version int) ID {
	return ID{Source: source, Table: table, Version: version}
}

// deadLetter is the id of the dead letter that follows id's message.
func (id ID) deadLetter() ID {
	id.DLQ = true
	return id
}

// String is the id as published in the Nats-Msg-Id header.
func (id ID) String() string {
	var s string
	if id.Table != "" {
		s = id.Source + ":schema:" + id.Table + ":" + strconv.Itoa(id.Version)
	} else {
		s = id.Source + ":" + string(id.Pos) + ":" + strconv.Itoa(id.Index)
	}
	if id.DLQ {
		s += ":dlq"
	}
	return s
}

// ParseID reads an id String made: ParseID(id.String()) == id for every
// id with a source and a position or a table.
func ParseID(s string) (ID, error) {
	var id ID
	rest, dlq := strings.CutSuffix(s, ":dlq")
	id.DLQ = dlq
	source, rest, ok := strings.Cut(rest, ":")
	if !ok || source == "" {
		return ID{}, fmt.Errorf("message id %q: not <source>:<pos>:<index> nor <source>:schema:<table>:<version>", s)
	}
	id.Source = source
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 {
		return ID{}, fmt.Errorf("message id %q: not <source>:<pos>:<index> nor <source>:schema:<table>:<version>", s)
	}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil || n < 0 || strconv.Itoa(n) != rest[i+1:] {
		return ID{}, fmt.Errorf("message id %q: %q is not an index or a version", s, rest[i+1:])
	}
	if table, ok := strings.CutPrefix(rest[:i], "schema:"); ok && table != "" {
		id.Table, id.Version = table, n
		return id, nil
	}
	id.Pos, id.Index = sources.Position(rest[:i]), n
	return id, nil
}

// numbering numbers the messages of the transaction being handed over.
type numbering struct {
	source string
	pos    sources.Position
	index  int
}

// begin tells whether pos starts another transaction, and if so starts
// its numbering.
func (n *numbering) begin(pos sources.Position) bool {
	if pos == n.pos {
		return false
	}
	n.pos, n.index = pos, 0
	return true
}

// end ends the transaction: its commit was handed over.
func (n *numbering) end() { n.pos, n.index = "", 0 }

// peek is the id next returns.
func (n *numbering) peek(pos sources.Position) ID {
	n.begin(pos)
	return ID{Source: n.source, Pos: pos, Index: n.index}
}

// next numbers the next message of the transaction at pos.
func (n *numbering) next(pos sources.Position) ID {
	id := n.peek(pos)
	n.index++
	return id
}
