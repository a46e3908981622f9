package sink

import (
	"hash/fnv"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

func TestCanonicalKey(t *testing.T) {
	tests := []struct {
		key  []sources.Value
		want string
	}{
		{[]sources.Value{sources.Value("42")}, `[42]`},
		{[]sources.Value{sources.Value(`"eu"`), sources.Value("7")}, `["eu",7]`},
		{[]sources.Value{sources.Value(`"1.50"`)}, `["1.50"]`},
		{nil, `[]`},
	}
	for _, tt := range tests {
		if got := string(AppendCanonicalKey(nil, tt.key)); got != tt.want {
			t.Errorf("AppendCanonicalKey(%q) = %s, want %s", tt.key, got, tt.want)
		}
	}
}

// The partition formula is a published contract: consumers in other
// languages compute it, so pin it to the standard library's FNV-1a and to
// fixed values a reader can check by hand.
func TestPartitionFormula(t *testing.T) {
	fixed := []struct {
		key        string
		partitions int
		want       int
	}{
		{`[42]`, 8, 7}, // FNV-1a 32 of "[42]" = 1722024111
		{`["eu",7]`, 8, 0},
		{`[1]`, 16, 4},
	}
	for _, tt := range fixed {
		h := fnv.New32a()
		h.Write([]byte(tt.key))
		std := int(h.Sum32() % uint32(tt.partitions))
		got := Partition([]byte(tt.key), tt.partitions)
		if got != std {
			t.Errorf("Partition(%s, %d) = %d, hash/fnv says %d", tt.key, tt.partitions, got, std)
		}
		if got != tt.want {
			t.Errorf("Partition(%s, %d) = %d, want %d", tt.key, tt.partitions, got, tt.want)
		}
	}
	for i := 0; i < 1000; i++ {
		key := AppendCanonicalKey(nil, []sources.Value{sources.Value([]byte{byte('0' + i%10)})})
		if p := Partition(key, 7); p < 0 || p >= 7 {
			t.Fatalf("partition %d out of range", p)
		}
	}
}
