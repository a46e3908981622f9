package sources

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
)

// Driver is one kind of database (source.kind). A new database is one
// package that implements Driver and Source, and one line in
// sources/drivers; nothing outside its package switches on its kind.
type Driver interface {
	// NewSettings returns the driver's own keys of the source: section
	// with their defaults: a pointer to a struct with YAML tags, the one
	// place those defaults are set. They are decoded from the same
	// mapping as Config, strictly: a key neither has is an error.
	NewSettings() Settings
	// DSNHasPassword tells whether a DSN in the driver's form carries a
	// password (which source.credentials would silently override).
	DSNHasPassword(dsn string) bool
	// Open connects, checks the prerequisites and fixes the capture point
	// (slot, GTID set, binlog position): a change committed after Open
	// returns is never missed.
	Open(ctx context.Context, spec Spec) (Source, error)
	// Check is sluice check's look at the database: everything that would
	// stop Open, and what would be captured, changing nothing.
	Check(ctx context.Context, spec Spec) Preflight
	// TLSWarning is the warning sluice run logs and sluice check prints for
	// a connection off loopback that is not verify-full TLS; "" when there
	// is none, or when the DSN is invalid (Open says why).
	TLSWarning(spec Spec) string
	// KindOf is the kind of the values of a column whose Table.Types
	// entry is typeName, as the driver's Tables give it in Kinds (KindOther
	// for a name it does not know). sluice schema reads the kinds of shapes
	// registered before kinds existed from it.
	KindOf(typeName string) Kind
}

// Config is the source: section's keys every driver reads. A driver's
// own keys (a PostgreSQL slot, a MySQL server_id) are its Settings, in the
// same YAML mapping.
type Config struct {
	// Name names the subjects, the checkpoint and driver objects (slot).
	Name string `yaml:"name"`
	// Kind chooses the driver.
	Kind string `yaml:"kind"`
	// DSN is the connection string, in the driver's form.
	DSN string `yaml:"dsn"`
	// Tables are names or patterns (public.*, shop.order_*); a table
	// created later that a pattern matches is captured while sluice runs.
	Tables []string `yaml:"tables"`
	// Exclude removes the tables its names or patterns match, from
	// Tables and from the default (every table).
	Exclude []string `yaml:"exclude"`
	// Keys gives the key columns of tables without a primary key.
	Keys map[string][]string `yaml:"keys"`
	// TLS protects every connection to the database; see README "Source TLS".
	TLS TLS `yaml:"tls"`
}

var sourceName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate lists every problem of the keys every driver reads; a driver's
// Settings.Validate adds what it reads differently (the DSN's form).
func (c Config) Validate() error {
	var p Problems
	switch {
	case c.Name == "":
		p.Add("source.name is required (a short name such as pg1; it names subjects, the slot and the checkpoint)")
	case !sourceName.MatchString(c.Name):
		p.Add("source.name %q may hold only letters, digits, '_' and '-'", c.Name)
	}
	p = append(p, c.TLS.Validate()...)
	for _, t := range c.Tables {
		if e := CheckTableEntry("source.tables", t); e != "" {
			p.Add("%s", e)
		}
	}
	for _, t := range c.Exclude {
		if e := CheckTableEntry("source.exclude", t); e != "" {
			p.Add("%s", e)
		}
	}
	return p.Err()
}

// Settings are a driver's own keys of the source: section, made by its
// NewSettings.
type Settings interface {
	// Validate lists every problem of the settings and of cfg as this
	// driver reads it (a DSN it requires, in its form), as Problems.
	Validate(cfg Config) error
}

// SettingsOf is a copy of spec's Settings, which a driver of kind makes
// with its NewSettings as a *S; nil (or a nil *S) is d's defaults.
// Settings of another driver are an error naming kind: the config decoder
// picks Settings by source.kind, but a Spec can be built by hand.
func SettingsOf[S any](spec Spec, kind string, d Driver) (S, error) {
	set, ok := any(spec.Settings).(*S)
	if spec.Settings == nil || ok && set == nil {
		set, ok = any(d.NewSettings()).(*S)
	}
	if !ok {
		var zero S
		return zero, fmt.Errorf("a %s source was given the settings of another kind (%T)", kind, spec.Settings)
	}
	return *set, nil
}

// Spec is everything a driver opens a source from: the source: section
// and what the rest of sluice gives it.
type Spec struct {
	Config
	// Settings are the driver's own keys, from its NewSettings; nil means
	// their defaults.
	Settings Settings
	// SignalTable is backfill.signal_table, schema.table of the
	// watermarks; "" is the driver's default.
	SignalTable string
	// Credentials, when set, supply the login on every connect; the
	// DSN's own user and password are ignored.
	Credentials Credentials
	// OnTableAdded, when set, is told of each table a pattern of Tables
	// matches while the source runs, once it is captured. It must not
	// block.
	OnTableAdded func(table string)
	// Log receives the source's own lines; nil discards them.
	Log *slog.Logger
}

// Preflight is what sluice check learned of a source's database.
type Preflight struct {
	// Problems would each stop sluice run; each names its fix.
	Problems []string
	// Transport is what the query connection's TLS turned out to be; nil
	// when no connection was made.
	Transport *Transport
	// Catalog is what would be captured; empty when the tables cannot be
	// read (Problems say why).
	Catalog Catalog
	// Passed and Warnings are further findings, a line each: checks worth
	// naming that passed, and what stops nothing but an operator should
	// know.
	Passed   []string
	Warnings []string
}

// Problems is every problem of a configuration, each naming its key and
// the fix. As an error it reads one per line.
type Problems []string

// Add appends a problem.
func (p *Problems) Add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// Err is p as an error, nil when there is none.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return p
}

func (p Problems) Error() string { return strings.Join(p, "\n") }
