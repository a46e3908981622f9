package sink

import (
	"slices"
	"sort"
	"strconv"
	"strings"
)

// StoredIDs is the set of message ids a stream holds after a checkpoint,
// which a replay must not publish again. Ids ending in a number
// (<source>:<position>:<index>, every change of a transaction) are kept as
// index ranges per prefix, so a million-row transaction cut short by a
// crash costs a few bytes, not a million strings.
type StoredIDs struct {
	spans map[string][]span // prefix → ascending, disjoint index ranges
	other map[string]struct{}
	n     int
}

// span is the inclusive index range [lo, hi].
type span struct{ lo, hi uint64 }

func newStoredIDs() *StoredIDs {
	return &StoredIDs{spans: make(map[string][]span), other: make(map[string]struct{})}
}

// splitID splits an id into its prefix and numeric last token.
func splitID(id string) (string, uint64, bool) {
	i := strings.LastIndexByte(id, ':')
	if i < 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(id[i+1:], 10, 64)
	return id[:i], n, err == nil
}

// add records id. Ids come in stream order, so a transaction's indexes
// arrive ascending and mostly extend the last range.
func (s *StoredIDs) add(id string) {
	prefix, idx, ok := splitID(id)
	if !ok {
		if _, held := s.other[id]; !held {
			s.other[id] = struct{}{}
			s.n++
		}
		return
	}
	sp := s.spans[prefix]
	i, held := find(sp, idx)
	if held {
		return
	}
	s.n++
	if i > 0 && sp[i-1].hi+1 == idx {
		sp[i-1].hi = idx
		return
	}
	s.spans[prefix] = slices.Insert(sp, i, span{idx, idx})
}

// find is the index of the first range ending at or after idx, and
// whether that range holds idx.
func find(sp []span, idx uint64) (int, bool) {
	i := sort.Search(len(sp), func(i int) bool { return sp[i].hi >= idx })
	return i, i < len(sp) && sp[i].lo <= idx
}

// Has tells whether id is stored. A nil set holds nothing.
func (s *StoredIDs) Has(id string) bool {
	if s == nil {
		return false
	}
	prefix, idx, ok := splitID(id)
	if !ok {
		_, held := s.other[id]
		return held
	}
	_, held := find(s.spans[prefix], idx)
	return held
}

// Len is how many ids the set holds.
func (s *StoredIDs) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}
