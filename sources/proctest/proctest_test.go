package proctest

import (
	"io"
	"strings"
	"testing"
)

func TestOutputKeepsTheTail(t *testing.T) {
	o := NewOutput(io.Discard)
	for i := 0; i < 20000; i++ {
		o.Write([]byte("line " + strings.Repeat("x", 10) + "\n"))
	}
	o.Write([]byte("last one\n"))
	if got := o.LastLines(1); got != "last one" {
		t.Fatalf("last line %q", got)
	}
	if n := len(o.recent); n > 64<<10 {
		t.Fatalf("kept %d bytes, want at most 64 KiB", n)
	}
	o.Reset()
	if got := o.LastLines(3); got != "" {
		t.Fatalf("after Reset: %q", got)
	}
}

func TestLastLines(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb", 5, "a\nb"},
		{"", 1, ""},
	} {
		if got := LastLines([]byte(c.in), c.n); got != c.want {
			t.Errorf("LastLines(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestFreePortNeverTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
