package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"

	"github.com/sluice-cdc/sluice/sources"
)

// ErrContract is an event that breaks its table's contract under the halt
// policy.
var ErrContract = errors.New("data contract broken")

// Contract policies: what happens to an event that breaks its contract.
const (
	Warn = "warn" // published, and a copy with the reason goes to the dead-letter subject
	DLQ  = "dlq"  // held back: only the dead-letter subject gets it
	Halt = "halt" // sluice stops before publishing it
)

// Contract is what one table's events promise consumers.
type Contract struct {
	Policy  string                  `yaml:"policy"` // warn, dlq (default) or halt
	Columns map[string]ColumnPolicy `yaml:"columns"`
}

// ColumnPolicy constrains one column of a row image.
type ColumnPolicy struct {
	// Type is the value's JSON kind: integer, number (a JSON number or a
	// decimal string), string, boolean, object, array.
	Type     string   `yaml:"type"`
	Required bool     `yaml:"required"` // the column is in the row
	Nullable *bool    `yaml:"nullable"` // false: never null; default true
	Enum     []string `yaml:"enum"`     // allowed values, as text
	Min      *float64 `yaml:"min"`      // numeric bounds, inclusive
	Max      *float64 `yaml:"max"`
}

// Contracts checks changes against the contracts of their tables.
type Contracts struct {
	tables map[string]Contract // schema.table
}

// NewContracts validates contracts keyed by schema.table.
func NewContracts(tables map[string]Contract) (*Contracts, error) {
	var problems []string
	out := make(map[string]Contract, len(tables))
	for name, c := range tables {
		if strings.Count(name, ".") != 1 {
			problems = append(problems, fmt.Sprintf("contracts: %q is not schema.table (MySQL: database.table)", name))
		}
		switch c.Policy {
		case "":
			c.Policy = DLQ
		case Warn, DLQ, Halt:
		default:
			problems = append(problems, fmt.Sprintf("contracts.%s.policy %q: use warn, dlq or halt", name, c.Policy))
		}
		for col, p := range c.Columns {
			switch p.Type {
			case "", "integer", "number", "string", "boolean", "object", "array":
			default:
				problems = append(problems, fmt.Sprintf("contracts.%s.columns.%s.type %q: use integer, number, string, boolean, object or array", name, col, p.Type))
			}
		}
		out[name] = c
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return &Contracts{tables: out}, nil
}

// Check returns the policy and the reasons when c breaks its contract,
// and "" when it keeps it (or its table has none). Deletes and truncates
// carry no row to check.
func (k *Contracts) Check(c *sources.Change) (policy string, reasons []string) {
	if c.Table == nil || c.After == nil || c.Op == sources.OpTruncate {
		return "", nil
	}
	ct, ok := k.tables[c.Table.QualifiedName()]
	if !ok {
		return "", nil
	}
	cols := make([]string, 0, len(ct.Columns))
	for col := range ct.Columns {
		cols = append(cols, col)
	}
	sort.Strings(cols)
	for _, col := range cols {
		p := ct.Columns[col]
		i := slices.Index(c.Table.Columns, col)
		if i < 0 {
			if p.Required {
				reasons = append(reasons, fmt.Sprintf("column %s is required but the table has no such column", col))
			}
			continue
		}
		v := c.After[i]
		if v == nil {
			continue // unchanged TOASTed value: it kept the contract when written
		}
		if r := p.check(col, v); r != "" {
			reasons = append(reasons, r)
		}
	}
	if len(reasons) == 0 {
		return "", nil
	}
	return ct.Policy, reasons
}

// CheckShape returns the policy and what a new shape breaks: required
// columns dropped, or retyped to a kind the contract does not accept.
func (k *Contracts) CheckShape(old, next Shape) (policy string, reasons []string) {
	ct, ok := k.tables[next.Schema+"."+next.Table]
	if !ok {
		return "", nil
	}
	columns := func(s Shape) map[string]Column {
		m := make(map[string]Column, len(s.Columns))
		for _, c := range s.Columns {
			m[c.Name] = c
		}
		return m
	}
	was, now := columns(old), columns(next)
	var out []string
	for col, p := range ct.Columns {
		c, ok := now[col]
		before := was[col].Type
		switch {
		case !ok && p.Required:
			out = append(out, fmt.Sprintf("required column %s was dropped", col))
		case ok && before != "" && before != c.Type && p.Type != "" && !kindAccepts(p.Type, c.Kind):
			out = append(out, fmt.Sprintf("column %s changed type from %s to %s, which the contract's %s does not accept", col, before, c.Type, p.Type))
		}
	}
	sort.Strings(out)
	return ct.Policy, out
}

// kindAccepts tells whether values of a column's kind can have the
// contract's JSON kind.
func kindAccepts(kind string, of sources.Kind) bool {
	js, _ := json.Marshal(columnSchema(of)["type"])
	if string(js) == "null" {
		return true // a type of any form
	}
	if kind == "number" && (strings.Contains(string(js), `"integer"`) || strings.Contains(string(js), `"number"`)) {
		return true
	}
	if kind == "number" && strings.Contains(string(js), `"string"`) {
		return of == sources.KindDecimal
	}
	return strings.Contains(string(js), `"`+kind+`"`)
}

func (p ColumnPolicy) check(col string, v sources.Value) string {
	if string(v) == "null" {
		if p.Nullable != nil && !*p.Nullable {
			return fmt.Sprintf("column %s is null, the contract says not null", col)
		}
		return ""
	}
	var x any
	d := json.NewDecoder(strings.NewReader(string(v)))
	d.UseNumber()
	if err := d.Decode(&x); err != nil {
		return fmt.Sprintf("column %s is not JSON: %v", col, err)
	}
	if p.Type != "" && !isKind(p.Type, x) {
		return fmt.Sprintf("column %s is %s, the contract says %s", col, v, p.Type)
	}
	if len(p.Enum) > 0 {
		s := fmt.Sprint(x)
		if !slices.Contains(p.Enum, s) {
			return fmt.Sprintf("column %s is %s, not one of %v", col, v, p.Enum)
		}
	}
	if p.Min != nil || p.Max != nil {
		n, ok := numberOf(x)
		if !ok {
			return fmt.Sprintf("column %s is %s, not a number to compare with its bounds", col, v)
		}
		if p.Min != nil && n.Cmp(new(big.Rat).SetFloat64(*p.Min)) < 0 {
			return fmt.Sprintf("column %s is %s, below the minimum %v", col, v, *p.Min)
		}
		if p.Max != nil && n.Cmp(new(big.Rat).SetFloat64(*p.Max)) > 0 {
			return fmt.Sprintf("column %s is %s, above the maximum %v", col, v, *p.Max)
		}
	}
	return ""
}

func isKind(kind string, x any) bool {
	switch kind {
	case "integer":
		n, ok := x.(json.Number)
		return ok && !strings.ContainsAny(string(n), ".eE")
	case "number":
		_, ok := numberOf(x)
		return ok
	case "string":
		_, ok := x.(string)
		return ok
	case "boolean":
		_, ok := x.(bool)
		return ok
	case "object":
		_, ok := x.(map[string]any)
		return ok
	case "array":
		_, ok := x.([]any)
		return ok
	}
	return true
}

// numberOf reads a JSON number or a decimal string exactly.
func numberOf(x any) (*big.Rat, bool) {
	var s string
	switch v := x.(type) {
	case json.Number:
		s = string(v)
	case string:
		s = v
	default:
		return nil, false
	}
	return new(big.Rat).SetString(s)
}
