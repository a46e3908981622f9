package mysql

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// defaultHeartbeat is the server heartbeat period unless source.heartbeat
// says otherwise: NewSettings gives it to the config file, New to a Config
// that leaves it zero.
const defaultHeartbeat = 10 * time.Second

var (
	_ sources.Driver = Driver{}
	_ sources.Source = (*Source)(nil)
)

// Driver is the MySQL and MariaDB kind of source.
type Driver struct{}

// Settings are the source: keys only a MySQL or MariaDB source has.
type Settings struct {
	// ServerID identifies sluice as a replica; 0 derives it from the name
	// (DefaultServerID).
	ServerID uint32 `yaml:"server_id"`
	// Positions is auto (GTID when the server has it), gtid or file.
	Positions string `yaml:"positions"`
	// Heartbeat is the server heartbeat period; three missed mean a dead
	// connection.
	Heartbeat time.Duration `yaml:"heartbeat"`
}

// NewSettings returns the defaults.
func (Driver) NewSettings() sources.Settings {
	return &Settings{Positions: "auto", Heartbeat: defaultHeartbeat}
}

// Validate lists every problem of s and of cfg's DSN.
func (s *Settings) Validate(cfg sources.Config) error {
	var p sources.Problems
	if cfg.DSN == "" {
		p.Add(`source.dsn is required, e.g. "user:password@tcp(127.0.0.1:3306)/shop"`)
	}
	switch s.Positions {
	case "", "auto", "gtid", "file":
	default:
		p.Add("source.positions %q: use auto, gtid or file", s.Positions)
	}
	if s.Heartbeat < 0 || s.Heartbeat > 0 && s.Heartbeat < 100*time.Millisecond {
		p.Add("source.heartbeat %s: use at least 100ms (default %s)", s.Heartbeat, defaultHeartbeat)
	}
	return p.Err()
}

// DSNHasPassword tells whether "user:password@tcp(...)/db" has a password.
func (Driver) DSNHasPassword(dsn string) bool {
	cred, _, ok := strings.Cut(dsn, "@tcp(")
	_, pw, hasPw := strings.Cut(cred, ":")
	return ok && hasPw && pw != ""
}

// Open connects a MySQL or MariaDB source (New).
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

// Check runs Check and Captured.
func (Driver) Check(ctx context.Context, spec sources.Spec) sources.Preflight {
	cfg, err := configOf(spec)
	if err != nil {
		return sources.Preflight{Problems: []string{err.Error()}}
	}
	var pf sources.Preflight
	pf.Problems, pf.Transport = Check(ctx, cfg)
	if cat, err := Captured(ctx, cfg); err == nil {
		pf.Catalog = cat
	}
	return pf
}

// TLSWarning is TLSWarning of spec's connections.
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
	s, err := sources.SettingsOf[Settings](spec, "mysql", Driver{})
	if err != nil {
		return Config{}, err
	}
	log := spec.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return Config{
		Name: spec.Name, DSN: spec.DSN, Tables: spec.Tables, Exclude: spec.Exclude, Keys: spec.Keys, TLS: spec.TLS,
		ServerID: s.ServerID, Positions: s.Positions, HeartbeatPeriod: s.Heartbeat,
		SignalTable: spec.SignalTable, Credentials: spec.Credentials, OnTableAdded: spec.OnTableAdded, Log: log,
	}, nil
}
