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
	"log/slog"
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
	// haltMissing: a shape that loses a policy's column and gains one
	// without a policy stops sluice (privacy.on_missing_column: halt);
	// otherwise it is logged.
	haltMissing bool
	log         *slog.Logger

	mu     sync.Mutex
	shapes map[*sources.Table]*privateShape
	// known holds, per table with policies, the columns vouched for: the
	// table's columns when CheckCoverage ran, and those of every shape
	// since. A column outside it that no policy names is new, and may be
	// a renamed column whose policy no longer matches.
	known map[string]map[string]bool
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
	p := &Privacy{tables: make(map[string]map[string]Policy), key: hashKey, shapes: make(map[*sources.Table]*privateShape),
		haltMissing: true, log: slog.New(slog.DiscardHandler), known: make(map[string]map[string]bool)}
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

// MissingColumn sets what a shape that lost a policy's column does: Halt
// (the default, fail closed) or Warn, and where warnings go.
func (p *Privacy) MissingColumn(policy string, log *slog.Logger) error {
	switch policy {
	case "", Halt:
		p.haltMissing = true
	case Warn:
		p.haltMissing = false
	default:
		return fmt.Errorf("%w: privacy.on_missing_column %q: use halt or warn", ErrPolicy, policy)
	}
	if log != nil {
		p.log = log
	}
	return nil
}

// Policies returns a table's column policies (nil when it has none).
func (p *Privacy) Policies(table string) map[string]Policy { return p.tables[table] }

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
	if err := p.checkShape(t, policies); err != nil {
		return nil, err
	}
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
		typ, kind := t.Types[i], t.ColumnKind(i)
		if pol != "" {
			// A masked or hashed value is a string whatever the column
			// held; "text" is the type name users have always read for it.
			typ, kind = "text", sources.KindString
		}
		out.Columns = append(out.Columns, col)
		out.Types = append(out.Types, typ)
		out.Kinds = append(out.Kinds, kind)
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

// checkShape fails closed on a shape that lost a column a policy names:
// when the shape also has a column no policy names and that was not there
// before, the column may have been renamed, and its values would leave in
// clear under the new name. A shape that only lost the column (dropped)
// cannot leak it and is logged. The caller holds p.mu.
func (p *Privacy) checkShape(t *sources.Table, policies map[string]Policy) error {
	qn := t.QualifiedName()
	var missing, added []string
	for col := range policies {
		if !slices.Contains(t.Columns, col) {
			missing = append(missing, col)
		}
	}
	known := p.known[qn]
	for _, col := range t.Columns {
		if policies[col] == "" && !known[col] {
			added = append(added, col)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		named := make([]string, len(missing))
		for i, col := range missing {
			named[i] = "privacy.columns." + qn + "." + col
		}
		switch {
		case len(added) > 0 && p.haltMissing:
			return fmt.Errorf("%w: %s names a column that %s no longer has, and the table has columns no policy names that it did not have: %s (its columns are now %s). "+
				"A renamed column would leave in clear under its new name: sluice stops before publishing a change of this shape (privacy.on_missing_column is halt). "+
				"Add a policy for the new name (and keep the old one until no event of the old shape remains to be read), then start sluice again",
				ErrPolicy, strings.Join(named, ", "), qn, strings.Join(added, ", "), strings.Join(t.Columns, ", "))
		case len(added) > 0:
			p.log.Warn("table shape lost a column a privacy policy names, and has new columns no policy names: they are published as they are (privacy.on_missing_column is warn)",
				"table", qn, "policies", strings.Join(named, ", "), "new_columns", strings.Join(added, ", "))
		default:
			p.log.Warn("table shape lost a column a privacy policy names: the policy hides nothing now; remove it from privacy.columns",
				"table", qn, "policies", strings.Join(named, ", "))
		}
	}
	if known == nil {
		known = make(map[string]bool)
		p.known[qn] = known
	}
	for _, col := range t.Columns {
		known[col] = true
	}
	return nil
}
