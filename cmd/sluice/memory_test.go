package main

import (
	"runtime/debug"
	"testing"
)

// TestMemoryLimit: a single-node sidecar gets the low soft limit, one
// whose embedded server is clustered the higher one, and GOMEMLIMIT wins
// over both.
func TestMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(before)
	t.Setenv("GOMEMLIMIT", "")
	for _, c := range []struct {
		clustered bool
		want      int64
	}{{false, defaultMemoryLimit}, {true, clusteredMemoryLimit}} {
		memoryLimit(c.clustered)
		if got := debug.SetMemoryLimit(-1); got != c.want {
			t.Errorf("clustered %v: soft memory limit %d, want %d", c.clustered, got, c.want)
		}
	}
	debug.SetMemoryLimit(12345 << 20)
	t.Setenv("GOMEMLIMIT", "12345MiB")
	memoryLimit(true)
	if got := debug.SetMemoryLimit(-1); got != 12345<<20 {
		t.Errorf("with GOMEMLIMIT set, the limit became %d", got)
	}
}
