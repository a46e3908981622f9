package capture

import (
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

func TestID(t *testing.T) {
	for _, tt := range []struct {
		id   ID
		want string
	}{
		{ID{Source: "pg1", Pos: "0/1A2B3C4", Index: 0}, "pg1:0/1A2B3C4:0"},
		{ID{Source: "pg1", Pos: "0/1A2B3C4", Index: 12}, "pg1:0/1A2B3C4:12"},
		{ID{Source: "pg1", Pos: "0/1A2B3C4", Index: 3, DLQ: true}, "pg1:0/1A2B3C4:3:dlq"},
		// MySQL positions hold colons: file:offset, uuid:n GTIDs.
		{ID{Source: "my1", Pos: "mysql-bin.000003:4711", Index: 2}, "my1:mysql-bin.000003:4711:2"},
		{ID{Source: "my1", Pos: "3e11fa47-71ca-11e1-9e33-c80aa9429562:23", Index: 0, DLQ: true}, "my1:3e11fa47-71ca-11e1-9e33-c80aa9429562:23:0:dlq"},
		{ID{Source: "mdb", Pos: "0-1-100", Index: 7}, "mdb:0-1-100:7"},
		{schemaID("pg1", "public.orders", 3), "pg1:schema:public.orders:3"},
		{schemaID("pg1", "public.orders", 3).deadLetter(), "pg1:schema:public.orders:3:dlq"},
	} {
		if got := tt.id.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.id, got, tt.want)
		}
		back, err := ParseID(tt.want)
		if err != nil || back != tt.id {
			t.Errorf("ParseID(%q) = %+v, %v; want %+v", tt.want, back, err, tt.id)
		}
	}
}

func TestParseIDRefuses(t *testing.T) {
	for _, s := range []string{
		"", "pg1", ":0/1:0", "pg1::0", "pg1:0/1", "pg1:0/1:x", "pg1:0/1:-1", "pg1:0/1:+1", "pg1:0/1:01",
		"pg1:0/1:0:dlq:dlq", "pg1:schema:public.t", "pg1:0/1:dlq",
	} {
		if id, err := ParseID(s); err == nil {
			t.Errorf("ParseID(%q) = %+v, want an error", s, id)
		}
	}
}

// TestNumbering: the messages of a transaction take indexes in order,
// peek does not take one, and a transaction (or a commit) starts again
// at 0.
func TestNumbering(t *testing.T) {
	n := numbering{source: "pg1"}
	next := func(pos sources.Position) string { return n.next(pos).String() }
	if !n.begin("0/10") || n.begin("0/10") {
		t.Fatal("begin must tell a new transaction from the one in progress")
	}
	if got := n.peek("0/10").String(); got != "pg1:0/10:0" {
		t.Fatalf("peek = %s", got)
	}
	for i, want := range []string{"pg1:0/10:0", "pg1:0/10:1", "pg1:0/10:2"} {
		if got := next("0/10"); got != want {
			t.Fatalf("message %d of the transaction: %s, want %s", i, got, want)
		}
	}
	if got := next("0/20"); got != "pg1:0/20:0" {
		t.Fatalf("first message of the next transaction: %s", got)
	}
	n.end()
	if !n.begin("0/20") {
		t.Fatal("after its commit a position begins a transaction again")
	}
	if got := next("0/20"); got != "pg1:0/20:0" {
		t.Fatalf("after a commit: %s", got)
	}
}
