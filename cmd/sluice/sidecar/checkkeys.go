package sidecar

import (
	"fmt"
	"io"
	"strings"

	"github.com/sluice-cdc/sluice/sources"
)

// printKeys prints the key each captured table's events carry and why it
// was chosen: a unique index or source.keys partitions events as surely
// as a primary key, and the operator should see which one before the
// first event.
func printKeys(w io.Writer, cat sources.Catalog) {
	for _, t := range cat.Tables {
		fmt.Fprintf(w, "      key of %s: %s\n", t.Key.Table, t.Key)
	}
	for _, n := range cat.Notes {
		fmt.Fprintf(w, "      %s\n", n)
	}
}

// printResolved prints what source.tables and source.exclude resolve to
// now: a pattern takes in tables by their names, and the operator should
// see which before they stream.
func printResolved(w io.Writer, tables []sources.CapturedTable) {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.Key.Table
	}
	list := strings.Join(names, ", ")
	if list == "" {
		list = "no table"
	}
	fmt.Fprintf(w, "      source.tables resolve to: %s\n", list)
}
