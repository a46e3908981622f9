package sink

import (
	"strconv"
	"testing"
)

func TestStoredIDs(t *testing.T) {
	s := newStoredIDs()
	// A big transaction cut short, a second one with a gap (a dead-lettered
	// index published elsewhere), a schema event and a dead-letter id.
	for i := range 100_000 {
		s.add("pg1:0/1A2B3C4:" + strconv.Itoa(i))
	}
	for _, i := range []int{0, 1, 2, 4, 5} {
		s.add("pg1:0/1A2B400:" + strconv.Itoa(i))
	}
	s.add("pg1:schema:public.t:3")
	s.add("pg1:0/1A2B400:3:dlq")
	s.add("pg1:0/1A2B400:5") // read twice: still one id

	if got, want := s.Len(), 100_000+5+2; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
	if n := len(s.spans["pg1:0/1A2B3C4"]); n != 1 {
		t.Errorf("a contiguous transaction takes %d ranges, want 1", n)
	}
	for id, want := range map[string]bool{
		"pg1:0/1A2B3C4:0": true, "pg1:0/1A2B3C4:99999": true, "pg1:0/1A2B3C4:100000": false,
		"pg1:0/1A2B400:3": false, "pg1:0/1A2B400:4": true, "pg1:0/1A2B400:6": false,
		"pg1:0/1A2B400:3:dlq": true, "pg1:0/1A2B400:4:dlq": false,
		"pg1:schema:public.t:3": true, "pg1:schema:public.t:4": false,
		"pg1:0/FFFFFFF:0": false, "no-colon": false,
	} {
		if got := s.Has(id); got != want {
			t.Errorf("Has(%q) = %v, want %v", id, got, want)
		}
	}
	var none *StoredIDs
	if none.Has("pg1:0/1:0") || none.Len() != 0 {
		t.Error("a nil set must hold nothing")
	}
}

func TestStoredIDsOutOfOrder(t *testing.T) {
	s := newStoredIDs()
	for _, i := range []int{5, 1, 3, 2, 4, 9} {
		s.add("m:1:" + strconv.Itoa(i))
	}
	for i := range 11 {
		want := i >= 1 && i <= 5 || i == 9
		if got := s.Has("m:1:" + strconv.Itoa(i)); got != want {
			t.Errorf("Has(m:1:%d) = %v, want %v", i, got, want)
		}
	}
}
