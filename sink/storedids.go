package sink

import (
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
	if s.Has(id) {
		return
	}
	s.n++
	prefix, idx, ok := splitID(id)
	if !ok {
		s.other[id] = struct{}{}
		return
	}
	sp := s.spans[prefix]
	if k := len(sp); k > 0 && sp[k-1].hi+1 == idx {
		sp[k-1].hi = idx
		return
	}
	sp = append(sp, span{idx, idx})
	sort.Slice(sp, func(a, b int) bool { return sp[a].lo < sp[b].lo })
	s.spans[prefix] = sp
}

// Has tells whether id is stored. A nil set holds nothing.
func (s *StoredIDs) Has(id string) bool {
	if s == nil {
		return false
	}
	prefix, idx, ok := splitID(id)
	if !ok {
		_, found := s.other[id]
		return found
	}
	sp := s.spans[prefix]
	i := sort.Search(len(sp), func(i int) bool { return sp[i].hi >= idx })
	return i < len(sp) && sp[i].lo <= idx
}

// Len is how many ids the set holds.
func (s *StoredIDs) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}
