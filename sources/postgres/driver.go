package postgres

import (
	"context"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// The defaults of a PostgreSQL source, in one place: NewSettings gives
// them to the config file, New to a Config that leaves them zero.
const (
	defaultHeartbeat      = time.Minute
	defaultMaxRetainedWAL = 1 << 30
	defaultSignalTable    = "public.sluice_signal"
	defaultStatusInterval = 10 * time.Second
)

var (
	_ sources.Driver = Driver{}
	_ sources.Source = (*Source)(nil)
)

// Driver is the PostgreSQL kind of source.
type Driver struct{}

// Settings are the source: keys only a PostgreSQL source has.
type Settings struct {
	Slot        string `yaml:"slot"`        // "" = sluice_<name>
	Publication string `yaml:"publication"` // "" = sluice_<name>
	// Heartbeat: while no captured table changes for this long, a
	// heartbeat row moves the slot on, so an idle database keeps no WAL.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// MaxRetainedWAL: past this many bytes of WAL held by the slot, sluice
	// warns.
	MaxRetainedWAL int64 `yaml:"max_retained_wal"`
}

// NewSettings returns the defaults.
func (Driver) NewSettings() sources.Settings {
	return &Settings{Heartbeat: defaultHeartbeat, MaxRetainedWAL: defaultMaxRetainedWAL}
}

// Validate lists every problem of s and of cfg's DSN.
func (s *Settings) Validate(cfg sources.Config) error {
	var p sources.Problems
	if cfg.DSN == "" {
		p.Add(`source.dsn is required, e.g. "postgres://user@127.0.0.1:5432/shop"`)
	}
	if s.Heartbeat < 0 || s.Heartbeat > 0 && s.Heartbeat < time.Second {
		p.Add("source.heartbeat %s: use at least 1s (default %s)", s.Heartbeat, defaultHeartbeat)
	}
	if s.MaxRetainedWAL < 0 {
		p.Add("source.max_retained_wal must not be negative (bytes; default 1GiB)")
	}
	return p.Err()
}

// DSNHasPassword tells whether a URL or key=value DSN carries a password.
func (Driver) DSNHasPassword(dsn string) bool {
	u, err := url.Parse(dsn)
	if err == nil && u.User != nil {
		_, set := u.User.Password()
		return set
	}
	return strings.Contains(dsn, "password=")
}

// Open connects a PostgreSQL source (New).
func (Driver) Open(ctx context.Context, spec sources.Spec) (sources.Source, error) {
	cfg, err := configOf(spec)
	if err != nil {
		return nil, err
	}
	s, err := New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Check runs Check and Captured, and with patterns in source.tables
// LaterTables.
func (Driver) Check(ctx context.Context, spec sources.Spec) sources.Preflight {
	cfg, err := configOf(spec)
	if err != nil {
		return sources.Preflight{Problems: []string{err.Error()}}
	}
	var pf sources.Preflight
	// The notes are warnings: a backfill they name works, only slowly.
	pf.Problems, pf.Warnings, pf.Transport = Check(ctx, cfg)
	if cat, err := Captured(ctx, cfg); err == nil {
		pf.Catalog = cat
	}
	if slices.ContainsFunc(cfg.Tables, sources.IsTablePattern) {
		// A warning, not a failure: the tables there now are captured.
		ok, note, err := LaterTables(ctx, cfg)
		switch {
		case err != nil:
			pf.Warnings = append(pf.Warnings, "tables created later: cannot tell whether they can join the publication: "+sources.Plain(err))
		case ok:
			pf.Passed = append(pf.Passed, "tables created later: "+note)
		default:
			pf.Warnings = append(pf.Warnings, "tables created later: "+note)
		}
	}
	return pf
}

// TLSWarning is TLSWarning of spec's connection.
func (Driver) TLSWarning(spec sources.Spec) string {
	cfg, err := configOf(spec)
	if err != nil {
		return ""
	}
	return TLSWarning(cfg)
}

// KindOf is the kind of a column whose type Table.Types names typeName.
func (Driver) KindOf(typeName string) sources.Kind { return valueKind(typeName) }

// configOf maps a driver Spec onto a Config: the one place the source:
// section reaches this package.
func configOf(spec sources.Spec) (Config, error) {
	s, err := sources.SettingsOf[Settings](spec, "postgres", Driver{})
	if err != nil {
		return Config{}, err
	}
	log := spec.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return Config{
		Name: spec.Name, DSN: spec.DSN, Tables: spec.Tables, Exclude: spec.Exclude, Keys: spec.Keys, TLS: spec.TLS,
		Slot: s.Slot, Publication: s.Publication, Heartbeat: s.Heartbeat, MaxRetainedWAL: s.MaxRetainedWAL,
		SignalTable: spec.SignalTable, Credentials: spec.Credentials, OnTableAdded: spec.OnTableAdded, Log: log,
	}, nil
}
