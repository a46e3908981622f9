// Package checkpoint keeps sluice's durable positions in a replicated
// JetStream key-value bucket, next to the stream they describe.
package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sources"
)

// ErrConflict means the checkpoint changed under us: another sluice is
// running for the same source.
var ErrConflict = errors.New("checkpoint was written by someone else")

// Checkpoint is where a source resumes. Every event up to Position is stored
// in the stream, at or below StreamSeq.
type Checkpoint struct {
	Source   string           `json:"source"`
	Position sources.Position `json:"position"`
	// StreamSeq is the stream's last sequence when Position was reached: the
	// messages after it belong to transactions after Position.
	StreamSeq uint64 `json:"stream_seq"`
	// LastEvent is the commit time of the last transaction up to Position.
	LastEvent time.Time `json:"last_event"`
	// SchemaVersions maps "schema.table" to the schema version in force.
	SchemaVersions map[string]int `json:"schema_versions,omitempty"`
	UpdatedAt      time.Time      `json:"updated_at"`
}

// Store reads and writes checkpoints.
type Store struct {
	kv jetstream.KeyValue
	// mu guards the maps: the pipeline and the backfill runner share a Store.
	mu       sync.Mutex
	revision map[string]uint64 // last revision seen per key, to detect a second writer
	unsure   map[string][]byte // a value whose write failed, and may yet have been stored
}

// Open opens the checkpoint bucket, creating it with the given replicas.
func Open(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*Store, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "sluice checkpoints",
			History:     5,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("open checkpoint bucket %s: %w", bucket, err)
	}
	return &Store{kv: kv, revision: make(map[string]uint64), unsure: make(map[string][]byte)}, nil
}

func positionKey(source string) string { return "pos." + source }

// Load returns the checkpoint of source; ok is false if it has none.
func (s *Store) Load(ctx context.Context, source string) (cp Checkpoint, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.kv.Get(ctx, positionKey(source))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read checkpoint of %s: %w", source, err)
	}
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		return Checkpoint{}, false, fmt.Errorf("checkpoint of %s is corrupt (revision %d): %w", source, e.Revision(), err)
	}
	s.revision[e.Key()] = e.Revision()
	return cp, true, nil
}

// Save writes cp. It fails with ErrConflict if the checkpoint was written
// by anyone else since this Store last read or wrote it.
func (s *Store) Save(ctx context.Context, cp Checkpoint) error {
	cp.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	key := positionKey(cp.Source)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.settle(ctx, key); err != nil {
		return err
	}
	var rev uint64
	if last, ok := s.revision[key]; ok {
		rev, err = s.kv.Update(ctx, key, b, last)
	} else {
		rev, err = s.kv.Create(ctx, key, b)
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%w: source %s: is a second sluice running with the same source.name?", ErrConflict, cp.Source)
	}
	if err != nil {
		// A write that timed out (a leader election, say) may still have
		// been stored: the next Save finds out before writing again.
		s.unsure[key] = b
		return fmt.Errorf("write checkpoint of %s: %w", cp.Source, err)
	}
	s.revision[key] = rev
	return nil
}

// settle resolves a write whose outcome is unknown: if the stored value is
// the one we tried to write, its revision becomes ours.
func (s *Store) settle(ctx context.Context, key string) error {
	tried, ok := s.unsure[key]
	if !ok {
		return nil
	}
	e, err := s.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("read checkpoint %s back after a failed write: %w", key, err)
	case bytes.Equal(e.Value(), tried):
		s.revision[key] = e.Revision()
	}
	delete(s.unsure, key)
	return nil
}

// Get returns the value of a key other than a position (backfill jobs,
// gaps); ok is false when it does not exist.
func (s *Store) Get(ctx context.Context, key string) (value []byte, ok bool, err error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s from the checkpoint bucket: %w", key, err)
	}
	return e.Value(), true, nil
}

// Put writes a key other than a position. Its writer is the only one, so
// it is not revision-checked.
func (s *Store) Put(ctx context.Context, key string, value []byte) error {
	if _, err := s.kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("write %s to the checkpoint bucket: %w", key, err)
	}
	return nil
}

// Keys lists the keys that start with prefix.
func (s *Store) Keys(ctx context.Context, prefix string) ([]string, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, prefix+">")
	if err != nil {
		return nil, fmt.Errorf("list %s* in the checkpoint bucket: %w", prefix, err)
	}
	var keys []string
	for k := range lister.Keys() {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// KeyToken maps a name (a table's schema.table) to the characters a key of
// the bucket allows, for the keys of backfill jobs and table shapes.
func KeyToken(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}
