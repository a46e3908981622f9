package schemas

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// CheckCoverage fails closed: every policy must name a captured table and
// one of its columns exactly, or a value it was meant to hide could leave
// in clear (a policy on public.users.SSN does nothing to column ssn). It
// lists every policy that matches nothing, with the near miss when there
// is one. current returns a captured table's columns; former, when set,
// the columns of the table's earlier shapes, which a policy may still name
// while events of those shapes remain to be read (a renamed column).
func (p *Privacy) CheckCoverage(ctx context.Context, captured []string, current, former ColumnsFunc) error {
	tables := make([]string, 0, len(p.tables))
	for t := range p.tables {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	var problems []string
	for _, t := range tables {
		if !slices.Contains(captured, t) {
			hint := nearMiss(t, captured)
			if hint == "" {
				hint = "captured: " + strings.Join(sorted(captured), ", ")
			}
			problems = append(problems, fmt.Sprintf("privacy.columns names table %s, which is not captured (%s)", t, hint))
			continue
		}
		cols, err := current(ctx, t)
		if err != nil {
			return fmt.Errorf("check privacy.columns against %s: %w", t, err)
		}
		p.vouch(t, cols)
		var earlier []string
		if former != nil {
			if earlier, err = former(ctx, t); err != nil {
				return fmt.Errorf("check privacy.columns against the earlier shapes of %s: %w", t, err)
			}
		}
		names := make([]string, 0, len(p.tables[t]))
		for c := range p.tables[t] {
			names = append(names, c)
		}
		sort.Strings(names)
		for _, c := range names {
			if slices.Contains(cols, c) || slices.Contains(earlier, c) {
				continue
			}
			hint := nearMiss(c, cols)
			if hint == "" {
				hint = "its columns: " + strings.Join(cols, ", ")
			}
			problems = append(problems, fmt.Sprintf("privacy.columns.%s.%s matches no column of %s (%s)", t, c, t, hint))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s; sluice does not start with a policy that hides nothing: correct the names (exactly, case included)", ErrPolicy, strings.Join(problems, "; "))
	}
	return nil
}

// ColumnsFunc returns a table's column names.
type ColumnsFunc func(ctx context.Context, table string) ([]string, error)

// vouch records a table's columns as known: a later shape's column outside
// them is new.
func (p *Privacy) vouch(table string, cols []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	known := make(map[string]bool, len(cols))
	for _, c := range cols {
		known[c] = true
	}
	p.known[table] = known
}

// nearMiss names a candidate equal to name but for case.
func nearMiss(name string, candidates []string) string {
	for _, c := range candidates {
		if strings.EqualFold(c, name) {
			return fmt.Sprintf("did you mean %s? names are case-sensitive", c)
		}
	}
	return ""
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}
