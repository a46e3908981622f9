// Package schemas decides what of a table leaves sluice and in what shape:
// column privacy policies now; schema versions and data contracts build on
// it (DESIGN.md "Top-level layout").
package schemas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/sluice-cdc/sluice/sources"
)

// Policy is what happens to a column's values before they leave sluice.
type Policy string

// The policies of privacy.columns.
const (
	// Mask replaces every non-null value with "***".
	Mask Policy = "mask"
	// Hash replaces every non-null value with the hex HMAC-SHA256 of its
	// JSON form under the configured key: equal values hash equally in
	// every table, so joins still work, and a hashed key column keeps
	// each key in one partition.
	Hash Policy = "hash"
	// Drop leaves the column out of the event.
	Drop Policy = "drop"
)

// MaskedValue is what a masked value reads as.
const MaskedValue = `"***"`

// MinHashKey is the shortest hash key accepted, in bytes: HMAC's strength
// is its key's.
const MinHashKey = 16

// ErrPolicy is a privacy policy that cannot be applied as configured.
var ErrPolicy = errors.New("privacy policy")

// Privacy rewrites changes by their columns' policies, before they are
// encoded or partitioned, so a clear value never reaches the stream.
type Privacy struct {
	tables map[string]map[string]Policy // schema.table → column → policy
	key    []byte

	mu     sync.Mutex
	shapes map[*sources.Table]*privateShape
}

// privateShape is one table shape's rewriting.
type privateShape struct {
	out      *sources.Table
	from     []int    // the input column of each output column
	policies []Policy // the policy of each output column ("" = as is)
	// hashedKey: a key column is hashed, so keys no longer sort as the
	// table does.
	hashedKey bool
}

// NewPrivacy checks the policies ("schema.table.column" → policy) and the
// hash key, which Hash needs.
func NewPrivacy(columns map[string]string, hashKey []byte) (*Privacy, error) {
	p := &Privacy{tables: make(map[string]map[string]Policy), key: hashKey, shapes: make(map[*sources.Table]*privateShape)}
	var problems []string
	names := make([]string, 0, len(columns))
	for name := range columns {
		names = append(names, name)
	}
	sort.Strings(names)
	hashed := false
	for _, name := range names {
		i := strings.LastIndexByte(name, '.')
		if i < 0 || strings.Count(name, ".") != 2 {
			problems = append(problems, fmt.Sprintf("privacy.columns: %q is not schema.table.column (MySQL: database.table.column)", name))
			continue
		}
		pol := Policy(columns[name])
		switch pol {
		case Mask, Drop:
		case Hash:
			hashed = true
		default:
			problems = append(problems, fmt.Sprintf("privacy.columns.%s: %q is not a policy: use mask, hash or drop", name, pol))
			continue
		}
		table, col := name[:i], name[i+1:]
		if p.tables[table] == nil {
			p.tables[table] = make(map[string]Policy)
		}
		p.tables[table][col] = pol
	}
	if hashed && len(hashKey) < MinHashKey {
		problems = append(problems, fmt.Sprintf("privacy: hash needs a key of at least %d bytes (privacy.hash_key_env names the variable that holds it, or privacy.hash_key_vault the secret); it has %d", MinHashKey, len(hashKey)))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrPolicy, strings.Join(problems, "; "))
	}
	return p, nil
}

// Change returns c with its values rewritten, or c itself when its table
// has no policy. Unchanged (TOASTed) values stay unknown, NULL stays NULL.
func (p *Privacy) Change(c *sources.Change) (*sources.Change, error) {
	if c.Table == nil || p.tables[c.Table.QualifiedName()] == nil {
		return c, nil
	}
	s, err := p.shape(c.Table)
	if err != nil {
		return nil, err
	}
	out := *c
	out.Table = s.out
	out.Before = p.rewrite(s, c.Before)
	out.After = p.rewrite(s, c.After)
	return &out, nil
}

// Table returns the shape t's changes are rewritten to (t itself when it
// has no policy).
func (p *Privacy) Table(t *sources.Table) (*sources.Table, error) {
	if p.tables[t.QualifiedName()] == nil {
		return t, nil
	}
	s, err := p.shape(t)
	if err != nil {
		return nil, err
	}
	return s.out, nil
}

// KeyOrderKept tells whether the table's keys still sort as the table
// does after the policies: not when a key column is hashed. Backfill chunk
// events state key ranges, so such a table cannot have them.
func (p *Privacy) KeyOrderKept(t *sources.Table) bool {
	if p.tables[t.QualifiedName()] == nil {
		return true
	}
	s, err := p.shape(t)
	return err == nil && !s.hashedKey
}

func (p *Privacy) rewrite(s *privateShape, row []sources.Value) []sources.Value {
	if row == nil {
		return nil
	}
	out := make([]sources.Value, len(s.from))
	for i, j := range s.from {
		v := row[j]
		switch {
		case v == nil || string(v) == "null" || s.policies[i] == "":
			out[i] = v
		case s.policies[i] == Mask:
			out[i] = sources.Value(MaskedValue)
		case s.policies[i] == Hash:
			m := hmac.New(sha256.New, p.key)
			m.Write(v)
			b := make([]byte, 0, 2+2*sha256.Size)
			b = append(b, '"')
			b = hex.AppendEncode(b, m.Sum(nil))
			out[i] = append(b, '"')
		}
	}
	return out
}

// shape returns the rewriting of a table shape, built once per shape.
func (p *Privacy) shape(t *sources.Table) (*privateShape, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.shapes[t]; ok {
		return s, nil
	}
	policies := p.tables[t.QualifiedName()]
	out := &sources.Table{Schema: t.Schema, Name: t.Name, Version: t.Version}
	s := &privateShape{out: out}
	outIndex := make([]int, len(t.Columns))
	for i, col := range t.Columns {
		pol := policies[col]
		isKey := slices.Contains(t.Key, i)
		if isKey && (pol == Drop || pol == Mask) {
			return nil, fmt.Errorf("%w: privacy.columns.%s.%s is %s, but %s is a key column: every key would read alike; hash it instead",
				ErrPolicy, t.QualifiedName(), col, pol, col)
		}
		if pol == Drop {
			outIndex[i] = -1
			continue
		}
		outIndex[i] = len(out.Columns)
		typ := t.Types[i]
		if pol != "" {
			typ = "text" // what a masked or hashed value is
		}
		out.Columns = append(out.Columns, col)
		out.Types = append(out.Types, typ)
		if t.NotNull != nil {
			out.NotNull = append(out.NotNull, t.NotNull[i])
		}
		s.from = append(s.from, i)
		s.policies = append(s.policies, pol)
		if isKey && pol == Hash {
			s.hashedKey = true
		}
	}
	for _, k := range t.Key {
		out.Key = append(out.Key, outIndex[k])
	}
	p.shapes[t] = s
	return s, nil
}
