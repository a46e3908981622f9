// Package sink is sluice's transport to JetStream: it partitions changes
// by primary key, encodes the event envelope, publishes in order and
// reports each transaction boundary once JetStream has stored it. It also
// embeds the NATS server. The capture engine that drives it is
// sources/capture.
package sink

import (
	"github.com/sluice-cdc/sluice/sources"
)

// AppendCanonicalKey appends the canonical encoding of a primary key: the
// JSON array of its values in key-column order, e.g. [42] or ["eu",7].
// Values are already JSON, so this is the exact text any consumer can
// rebuild from the event's "key" object.
func AppendCanonicalKey(dst []byte, key []sources.Value) []byte {
	dst = append(dst, '[')
	for i, v := range key {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, v...)
	}
	return append(dst, ']')
}

// Partition returns the partition of a canonical key: FNV-1a 32-bit of its
// bytes modulo the partition count (DESIGN.md "Subjects and partitions").
func Partition(canonicalKey []byte, partitions int) int {
	// Inlined FNV-1a: hash/fnv would allocate a hasher per event.
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	h := uint32(offset32)
	for _, b := range canonicalKey {
		h ^= uint32(b)
		h *= prime32
	}
	return int(h % uint32(partitions))
}
