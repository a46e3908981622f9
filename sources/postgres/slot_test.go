package postgres

import (
	"strings"
	"testing"
)

// From PostgreSQL 17 on the slot is a failover slot; before, sluice check
// says a failover means a gap.
func TestFailoverSlotByVersion(t *testing.T) {
	if sql := createSlotSQL(150012); strings.Contains(sql, "true") {
		t.Errorf("PostgreSQL 15: %s, want no failover argument", sql)
	}
	if sql := createSlotSQL(170002); !strings.HasSuffix(sql, "'pgoutput', false, false, true)") {
		t.Errorf("PostgreSQL 17: %s, want failover = true", sql)
	}
	for _, tt := range []struct {
		version  int
		failover bool
		says     string
	}{
		{150012, false, "does not survive a failover"},
		{170002, true, "sync_replication_slots = on"},
		{170002, false, "ALTER_REPLICATION_SLOT"},
	} {
		if got := slotFailover(tt.version, tt.failover); !strings.Contains(got, tt.says) {
			t.Errorf("slotFailover(%d, %v) = %q, want it to say %q", tt.version, tt.failover, got, tt.says)
		}
	}
}
