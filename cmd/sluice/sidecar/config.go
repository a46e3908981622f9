package sidecar

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluice-cdc/sluice/backfill"
	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/capture"
	"github.com/sluice-cdc/sluice/sources/credentials"
	"github.com/sluice-cdc/sluice/sources/drivers"
)

// Config is the whole sluice configuration file.
type Config struct {
	Source     SourceConfig     `yaml:"source"`
	NATS       NATSConfig       `yaml:"nats"`
	Stream     StreamConfig     `yaml:"stream"`
	Checkpoint CheckpointConfig `yaml:"checkpoint"`
	Backfill   BackfillConfig   `yaml:"backfill"`
	Privacy    PrivacyConfig    `yaml:"privacy"`
	// Contracts are per-table data contracts, keyed by schema.table.
	Contracts map[string]schemas.Contract `yaml:"contracts"`
	HTTP      HTTPConfig                  `yaml:"http"`
	Log       LogConfig                   `yaml:"log"`
}

// HTTPConfig is the port of /metrics, /healthz and /readyz.
type HTTPConfig struct {
	Listen string `yaml:"listen"` // host:port; empty = no HTTP port
	// PProf serves Go's profiles on /debug/pprof/ too: for diagnosing a
	// slow or growing sluice, on a port only operators can reach.
	PProf bool `yaml:"pprof"`
}

// PrivacyConfig hides column values before events leave sluice.
type PrivacyConfig struct {
	// Columns maps schema.table.column to mask, hash or drop.
	Columns map[string]string `yaml:"columns"`
	// The hash key: the environment variable that holds it, or a KV v2
	// secret read with source.credentials.vault's login.
	HashKeyEnv   string       `yaml:"hash_key_env"`
	HashKeyVault *VaultSecret `yaml:"hash_key_vault"`
	// OnMissingColumn is what a shape change that loses a policy's column
	// for one no policy names (a rename) does: halt (default) or warn.
	OnMissingColumn string `yaml:"on_missing_column"`
}

// VaultSecret is one field of a KV v2 secret.
type VaultSecret struct {
	Mount string `yaml:"mount"` // default "secret"
	Path  string `yaml:"path"`
	Field string `yaml:"field"`
}

// BackfillConfig tunes backfills and what a lost log position does.
type BackfillConfig struct {
	ChunkSize int `yaml:"chunk_size"`
	// SignalTable holds the watermarks; default public.sluice_signal
	// (Postgres) or <database>.sluice_signal (MySQL).
	SignalTable string `yaml:"signal_table"`
	// OnGap is "backfill" or "fail".
	OnGap string `yaml:"on_gap"`
	// StatementTimeout bounds each chunk's SELECT on the database server.
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	// Initial snapshots every table that never had a full backfill: on the
	// first start, and when a table joins source.tables.
	Initial bool `yaml:"initial"`
}

// SourceConfig is the database to capture: the keys every driver reads,
// where the login comes from, and the keys only source.kind's driver has.
type SourceConfig struct {
	sources.Config `yaml:",inline"`
	Credentials    *CredentialsConfig `yaml:"credentials"`
	// Settings are source.kind's own keys (a PostgreSQL slot, a MySQL
	// server_id), from its driver's NewSettings, read from the same
	// mapping by UnmarshalYAML; nil for a kind no driver has.
	Settings sources.Settings `yaml:"-"`
	// drivers are the kinds the config was read with.
	drivers map[string]sources.Driver
}

// plainSource is SourceConfig without its UnmarshalYAML.
type plainSource SourceConfig

// UnmarshalYAML reads the section in one strict pass over the keys every
// driver reads and those of source.kind's driver, so that a misspelled
// key, or another kind's, is an error naming it and its line.
func (s *SourceConfig) UnmarshalYAML(unmarshal func(any) error) error {
	kind := struct {
		Kind string               `yaml:"kind"`
		Rest map[string]yaml.Node `yaml:",inline"`
	}{Kind: s.Kind}
	if err := unmarshal(&kind); err != nil {
		return err
	}
	d, ok := s.drivers[kind.Kind]
	if !ok {
		// Validate names the kind; its keys cannot be told from typos.
		return unmarshal(&struct {
			Source *plainSource         `yaml:",inline"`
			Rest   map[string]yaml.Node `yaml:",inline"`
		}{Source: (*plainSource)(s)})
	}
	settings := d.NewSettings()
	// The keys of both structs in one: yaml decodes into a struct type,
	// and the driver's is known only now.
	both := reflect.New(reflect.StructOf([]reflect.StructField{
		{Name: "Source", Type: reflect.TypeFor[*plainSource](), Tag: `yaml:",inline"`},
		{Name: "Settings", Type: reflect.TypeOf(settings), Tag: `yaml:",inline"`},
	})).Elem()
	both.Field(0).Set(reflect.ValueOf((*plainSource)(s)))
	both.Field(1).Set(reflect.ValueOf(settings))
	err := unmarshal(both.Addr().Interface())
	s.Settings = settings
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	for i, e := range te.Errors {
		e = strings.ReplaceAll(e, both.Type().String(), reflect.TypeFor[SourceConfig]().String())
		if m := unknownField.FindStringSubmatch(e); m != nil && m[3] == "SourceConfig" {
			if other := s.kindWithKey(m[2]); other != "" {
				e = fmt.Sprintf("line %s: unknown key source.%s: a key of kind %s, and source.kind is %s", m[1], m[2], other, kind.Kind)
			}
		}
		te.Errors[i] = e
	}
	return te
}

// kindWithKey names a kind whose driver has the source: key, "" if none.
func (s *SourceConfig) kindWithKey(key string) string {
	for _, kind := range slices.Sorted(maps.Keys(s.drivers)) {
		var n yaml.Node
		if n.Encode(s.drivers[kind].NewSettings()) != nil {
			continue
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return kind
			}
		}
	}
	return ""
}

// Driver is source.kind's driver; nil for a kind none has (Validate
// says so).
func (s SourceConfig) Driver() sources.Driver { return s.drivers[s.Kind] }

// validate lists every problem of the section.
func (s SourceConfig) validate() []string {
	p := problems(s.Config.Validate())
	d := s.Driver()
	if d == nil {
		p = append(p, fmt.Sprintf("source.kind %q is not supported: use %s", s.Kind, strings.Join(slices.Sorted(maps.Keys(s.drivers)), " or ")))
	} else if s.Settings != nil {
		p = append(p, problems(s.Settings.Validate(s.Config))...)
	}
	if cr := s.Credentials; cr != nil {
		if cr.Vault == nil {
			p = append(p, "source.credentials needs vault: {...}")
		} else {
			p = append(p, cr.Vault.Validate()...)
		}
		if d != nil && d.DSNHasPassword(s.DSN) {
			p = append(p, "source.dsn holds a password while source.credentials is set: remove it from the DSN; the login comes from Vault")
		}
	}
	return p
}

// problems lists the problems of a Validate error.
func problems(err error) []string {
	var p sources.Problems
	switch {
	case err == nil:
		return nil
	case errors.As(err, &p):
		return p
	}
	return []string{err.Error()}
}

// CredentialsConfig says where the source's login comes from instead of
// the DSN.
type CredentialsConfig struct {
	Vault *credentials.Config `yaml:"vault"`
}

// NATSConfig chooses the embedded server or an external one.
type NATSConfig struct {
	URL        string         `yaml:"url"` // external server or cluster (nats://user:pass@host:4222,...); empty = embedded
	Listen     string         `yaml:"listen"`
	StoreDir   string         `yaml:"store_dir"`
	ServerName string         `yaml:"server_name"`
	MaxPayload int32          `yaml:"max_payload"`
	Cluster    *ClusterConfig `yaml:"cluster"`
	Users      []NATSUser     `yaml:"users"`
	TLS        *NATSTLS       `yaml:"tls"`
	// StartupTimeout bounds the wait for JetStream at start (a cluster
	// finding its members and electing leaders).
	StartupTimeout time.Duration `yaml:"startup_timeout"`
	// MaxConsumers bounds the JetStream consumers of the event streams
	// (embedded server), so no login can exhaust the server with them.
	MaxConsumers int `yaml:"max_consumers"`
	// MaxStore bounds, in bytes, the disk the event streams may take on
	// the embedded server; past it sluice waits with its position kept.
	// 0 leaves it to the disk.
	MaxStore int64 `yaml:"max_store"`
	// StoreEncryption encrypts the embedded server's JetStream store at
	// rest: events, the checkpoint bucket, everything.
	StoreEncryption *StoreEncryptionConfig `yaml:"store_encryption"`
}

// StoreEncryptionConfig is the cipher of the store and where its key comes
// from: an environment variable, or a KV v2 secret read with
// source.credentials.vault's login. PrevKey* is the key being rotated out.
type StoreEncryptionConfig struct {
	Cipher       string       `yaml:"cipher"` // chacha (default) or aes
	KeyEnv       string       `yaml:"key_env"`
	KeyVault     *VaultSecret `yaml:"key_vault"`
	PrevKeyEnv   string       `yaml:"prev_key_env"`
	PrevKeyVault *VaultSecret `yaml:"prev_key_vault"`
}

// ClusterConfig joins the embedded servers of several sluice processes.
// Routes must authenticate: a user and password shared by the members, or
// TLS with certificates verified against a CA, or both.
type ClusterConfig struct {
	Name     string      `yaml:"name"`
	Listen   string      `yaml:"listen"`
	Routes   []string    `yaml:"routes"`
	User     string      `yaml:"user"`
	Password string      `yaml:"password"`
	TLS      *ClusterTLS `yaml:"tls"`
}

// ClusterTLS is the route port's certificate; every peer must present one
// signed by CA.
type ClusterTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
}

// NATSUser is a login of the embedded server's client port.
type NATSUser struct {
	User        string `yaml:"user"`
	Password    string `yaml:"password"`
	Nkey        string `yaml:"nkey"`
	Permissions string `yaml:"permissions"` // read (default), backfill or admin
}

// NATSTLS is the embedded server's client certificate, or with nats.url
// the CA that verifies the external server.
type NATSTLS struct {
	Cert          string `yaml:"cert"`
	Key           string `yaml:"key"`
	CA            string `yaml:"ca"`
	VerifyClients bool   `yaml:"verify_clients"`
}

// StreamConfig is the JetStream stream layout.
type StreamConfig struct {
	Name            string        `yaml:"name"`
	SubjectPrefix   string        `yaml:"subject_prefix"`
	Partitions      int           `yaml:"partitions"`
	Replicas        int           `yaml:"replicas"`
	MaxAge          time.Duration `yaml:"max_age"`
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	Window          int           `yaml:"max_in_flight"`
	// A partition whose events over HotPartitionWindow exceed
	// HotPartitionFactor times the mean is logged and counted as hot.
	HotPartitionFactor float64       `yaml:"hot_partition_factor"`
	HotPartitionWindow time.Duration `yaml:"hot_partition_window"`
}

// CheckpointConfig is where and how often positions are saved.
type CheckpointConfig struct {
	Bucket   string        `yaml:"bucket"`
	Interval time.Duration `yaml:"interval"`
}

// LogConfig sets the log output.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// defaults are every default value, in one place.
func defaults() Config {
	return Config{
		Source: SourceConfig{Config: sources.Config{Kind: drivers.DefaultKind}, drivers: drivers.All()},
		NATS:   NATSConfig{Listen: "127.0.0.1:4222", StoreDir: "./data", MaxPayload: 8 << 20, StartupTimeout: capture.DefaultStartupTimeout},
		Stream: StreamConfig{
			SubjectPrefix: "cdc", Partitions: 8, Replicas: 1,
			MaxAge: 7 * 24 * time.Hour, DuplicateWindow: sink.DefaultDuplicateWindow, Window: sink.DefaultWindow,
			HotPartitionFactor: 3, HotPartitionWindow: time.Minute,
		},
		Checkpoint: CheckpointConfig{Bucket: "sluice_checkpoints", Interval: capture.DefaultCheckpointInterval},
		Backfill:   BackfillConfig{ChunkSize: backfill.DefaultChunkSize, OnGap: "backfill", StatementTimeout: time.Minute, Initial: true},
		Log:        LogConfig{Level: "info", Format: "text"},
	}
}

// LoadConfig reads a config file strictly: an unknown or misspelled key is
// an error naming it, then Validate lists every remaining problem.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, b)
}

// ParseConfig decodes and validates a config document.
func ParseConfig(path string, b []byte) (Config, error) {
	return parseConfig(path, b, drivers.All())
}

// parseConfig is ParseConfig with the source kinds of reg.
func parseConfig(path string, b []byte, reg map[string]sources.Driver) (Config, error) {
	cfg := defaults()
	cfg.Source.drivers = reg
	b, err := expandEnv(b)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// An empty file decodes to io.EOF; Validate then names the required keys.
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("config %s: %s", path, explainYAML(err))
	}
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${NAME} with the environment variable NAME, so secrets
// and per-pod names stay out of the file. An unset variable is an error: an
// empty password or server name would fail later, less clearly.
func expandEnv(b []byte) ([]byte, error) {
	var missing []string
	out := envRef.ReplaceAllFunc(b, func(m []byte) []byte {
		name := string(envRef.FindSubmatch(m)[1])
		v, ok := os.LookupEnv(name)
		if !ok {
			missing = append(missing, name)
		}
		return []byte(v)
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("environment variable %s is not set (the config refers to it as ${%s})", strings.Join(missing, ", "), missing[0])
	}
	return out, nil
}

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type \w+\.(\w+)`)

// explainYAML rewrites yaml's Go-flavoured errors into config terms.
func explainYAML(err error) string {
	msg := err.Error()
	sections := map[string]string{"Config": "", "SourceConfig": "source.", "NATSConfig": "nats.", "StreamConfig": "stream.",
		"CheckpointConfig": "checkpoint.", "LogConfig": "log.", "ClusterConfig": "nats.cluster.", "NATSUser": "nats.users[].",
		"NATSTLS": "nats.tls.", "CredentialsConfig": "source.credentials.", "BackfillConfig": "backfill.",
		"PrivacyConfig": "privacy.", "VaultSecret": "<vault secret>.", "StoreEncryptionConfig": "nats.store_encryption.", "Contract": "contracts.<table>.",
		"ColumnPolicy": "contracts.<table>.columns.<column>.", "HTTPConfig": "http.", "TLS": "source.tls."}
	msg = unknownField.ReplaceAllStringFunc(msg, func(m string) string {
		p := unknownField.FindStringSubmatch(m)
		return fmt.Sprintf("line %s: unknown key %s%s (misspelled? see README \"Configuration\")", p[1], sections[p[3]], p[2])
	})
	return strings.ReplaceAll(msg, "yaml: unmarshal errors:\n  ", "")
}

func (c *Config) fill() {
	if d := c.Source.Driver(); d != nil && c.Source.Settings == nil {
		c.Source.Settings = d.NewSettings()
	}
	if c.NATS.ServerName == "" {
		c.NATS.ServerName = "sluice-" + c.Source.Name
	}
	if c.Stream.Name == "" {
		c.Stream.Name = "SLUICE_" + strings.ToUpper(strings.ReplaceAll(c.Source.Name, "-", "_"))
	}
	if e := c.NATS.StoreEncryption; e != nil && e.Cipher == "" {
		e.Cipher = sink.CipherChaCha
	}
}

// loopback tells whether a host:port listens on this host only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var (
	namePattern   = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
)

// checkVaultSecret names what a secret read from Vault lacks.
func (s SourceConfig) checkVaultSecret(setting, envSetting string, v *VaultSecret) []string {
	if v == nil {
		return nil
	}
	var p []string
	if v.Path == "" || v.Field == "" {
		p = append(p, setting+" needs path and field")
	}
	if s.Credentials == nil || s.Credentials.Vault == nil {
		p = append(p, setting+" reads Vault with source.credentials.vault's address and login: configure it, or use "+envSetting)
	}
	return p
}

func (c Config) validateStoreEncryption(e *StoreEncryptionConfig) []string {
	var p []string
	const s = "nats.store_encryption"
	if c.NATS.URL != "" {
		p = append(p, s+" encrypts the embedded server's store; with nats.url, turn on encryption at rest in the external servers' own configuration")
	}
	switch e.Cipher {
	case sink.CipherChaCha, sink.CipherAES:
	default:
		p = append(p, fmt.Sprintf("%s.cipher %q: use chacha (the default) or aes", s, e.Cipher))
	}
	switch {
	case e.KeyEnv != "" && e.KeyVault != nil:
		p = append(p, s+": set key_env or key_vault, not both")
	case e.KeyEnv == "" && e.KeyVault == nil:
		p = append(p, s+" needs the key: key_env (the environment variable that holds it) or key_vault {mount, path, field}")
	}
	if e.PrevKeyEnv != "" && e.PrevKeyVault != nil {
		p = append(p, s+": set prev_key_env or prev_key_vault, not both")
	}
	if e.PrevKeyEnv != "" && e.PrevKeyEnv == e.KeyEnv {
		p = append(p, s+": prev_key_env and key_env name the same variable: prev_key_env holds the old key while rotating to the one in key_env")
	}
	p = append(p, c.Source.checkVaultSecret(s+".key_vault", s+".key_env", e.KeyVault)...)
	p = append(p, c.Source.checkVaultSecret(s+".prev_key_vault", s+".prev_key_env", e.PrevKeyVault)...)
	return p
}

// Validate reports every problem in the configuration at once.
func (c Config) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	p = append(p, c.Source.validate()...)
	if c.NATS.URL == "" {
		if c.NATS.StoreDir == "" {
			add("nats.store_dir is required for the embedded server")
		}
		if c.NATS.Listen == "" {
			add("nats.listen is required for the embedded server (host:port)")
		}
	}
	if cl := c.NATS.Cluster; cl != nil {
		if c.NATS.URL != "" {
			add("nats.cluster is for the embedded server; with nats.url the cluster is the external one")
		}
		if cl.Name == "" || !namePattern.MatchString(cl.Name) {
			add("nats.cluster.name %q is required and may hold only letters, digits, '_' and '-' (the same on every member)", cl.Name)
		}
		if cl.Listen == "" {
			add("nats.cluster.listen is required (host:port for routes, e.g. 0.0.0.0:6222)")
		}
		if len(cl.Routes) == 0 {
			add("nats.cluster.routes is required: the nats://host:port of the cluster members")
		}
		if (cl.User == "") != (cl.Password == "") {
			add("nats.cluster.user and nats.cluster.password go together")
		}
		if t := cl.TLS; t != nil && (t.Cert == "" || t.Key == "" || t.CA == "") {
			add("nats.cluster.tls needs cert, key and ca: every route peer must present a certificate signed by ca")
		}
		if cl.User == "" && cl.TLS == nil {
			add("nats.cluster: routes must authenticate, or any server that reaches the route port joins the cluster and reads every event: set nats.cluster.user and nats.cluster.password (the same on every member, e.g. from ${NATS_ROUTE_PASSWORD}), or nats.cluster.tls {cert, key, ca}, or both")
		}
	}
	if c.Stream.Replicas > 1 && c.NATS.URL == "" && c.NATS.Cluster == nil {
		add("stream.replicas %d needs a cluster: set nats.cluster (embedded servers of %d or more sluice processes) or nats.url", c.Stream.Replicas, c.Stream.Replicas)
	}
	for i, u := range c.NATS.Users {
		switch {
		case u.Nkey != "" && (u.User != "" || u.Password != ""):
			add("nats.users[%d]: give nkey, or user and password, not both", i)
		case u.Nkey == "" && (u.User == "" || u.Password == ""):
			add("nats.users[%d]: user and password are required (or an nkey)", i)
		}
		switch u.Permissions {
		case "", "admin", "backfill", "read":
		default:
			add("nats.users[%d].permissions %q: use read (consume this source's events), backfill (read and the backfill control subjects) or admin", i, u.Permissions)
		}
	}
	if c.NATS.URL == "" && c.NATS.Listen != "" && !loopback(c.NATS.Listen) && len(c.NATS.Users) == 0 &&
		(c.NATS.TLS == nil || !c.NATS.TLS.VerifyClients) {
		add("nats.listen %s is reachable from other hosts, but no login is configured: anyone could read every event; set nats.users (read, backfill or admin logins), or nats.tls with verify_clients: true, or listen on 127.0.0.1", c.NATS.Listen)
	}
	if len(c.NATS.Users) > 0 && c.NATS.URL != "" {
		add("nats.users configure the embedded server; with nats.url put the login in the URL (nats://user:password@host:4222)")
	}
	if t := c.NATS.TLS; t != nil {
		if c.NATS.URL == "" && (t.Cert == "" || t.Key == "") {
			add("nats.tls.cert and nats.tls.key are required to serve TLS")
		}
		if t.VerifyClients && t.CA == "" {
			add("nats.tls.verify_clients needs nats.tls.ca")
		}
	}
	if c.NATS.MaxStore < 0 {
		add("nats.max_store %d: use 0 (no limit but the disk) or a size in bytes", c.NATS.MaxStore)
	}
	if c.NATS.MaxConsumers < 0 {
		add("nats.max_consumers must not be negative (0 = the default, 10000)")
	}
	if c.NATS.StartupTimeout <= 0 {
		add("nats.startup_timeout must be positive, e.g. 1m")
	}
	if c.NATS.MaxPayload < 1024 || c.NATS.MaxPayload > 64<<20 {
		add("nats.max_payload %d is out of range (1024 to 67108864 bytes)", c.NATS.MaxPayload)
	}
	if !prefixPattern.MatchString(c.Stream.SubjectPrefix) {
		add("stream.subject_prefix %q is not a valid subject prefix (tokens of letters, digits, '_', '-', joined by '.')", c.Stream.SubjectPrefix)
	}
	if c.Stream.Partitions < 1 || c.Stream.Partitions > 4096 {
		add("stream.partitions %d is out of range (1 to 4096)", c.Stream.Partitions)
	}
	if c.Stream.Replicas != 1 && c.Stream.Replicas != 3 && c.Stream.Replicas != 5 {
		add("stream.replicas %d: use 1, 3 or 5", c.Stream.Replicas)
	}
	if c.Stream.Window < 1 {
		add("stream.max_in_flight must be at least 1")
	}
	if c.Stream.DuplicateWindow < 100*time.Millisecond {
		add("stream.duplicate_window %s: use at least 100ms, JetStream's minimum (default %s)", c.Stream.DuplicateWindow, sink.DefaultDuplicateWindow)
	}
	if c.Checkpoint.Interval <= 0 {
		add("checkpoint.interval must be positive, e.g. 250ms")
	}
	if c.Checkpoint.Bucket == "" || !namePattern.MatchString(c.Checkpoint.Bucket) {
		add("checkpoint.bucket %q may hold only letters, digits, '_' and '-'", c.Checkpoint.Bucket)
	}
	if c.Backfill.ChunkSize < 2 {
		add("backfill.chunk_size must be at least 2 (default 2048)")
	}
	if c.Backfill.StatementTimeout < time.Millisecond {
		add("backfill.statement_timeout %s: use at least 1ms (default 1m; it bounds each chunk's query on the database)", c.Backfill.StatementTimeout)
	}
	if m := c.Privacy.OnMissingColumn; m != "" && m != schemas.Halt && m != schemas.Warn {
		add("privacy.on_missing_column %q: use halt (stop before a renamed column could leave in clear) or warn", m)
	}
	switch c.Backfill.OnGap {
	case "backfill", "fail":
	default:
		add("backfill.on_gap %q: use backfill (record the gap and backfill the captured tables) or fail (stop)", c.Backfill.OnGap)
	}
	if l := c.HTTP.Listen; l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			add("http.listen %q: want host:port, e.g. 127.0.0.1:9090", l)
		}
	}
	if _, err := schemas.NewContracts(c.Contracts); err != nil {
		add("%v", err)
	}
	if p := c.Privacy; p.HashKeyEnv != "" && p.HashKeyVault != nil {
		add("privacy: set hash_key_env or hash_key_vault, not both")
	}
	p = append(p, c.Source.checkVaultSecret("privacy.hash_key_vault", "privacy.hash_key_env", c.Privacy.HashKeyVault)...)
	if e := c.NATS.StoreEncryption; e != nil {
		p = append(p, c.validateStoreEncryption(e)...)
	}
	if t := c.Backfill.SignalTable; t != "" && strings.Count(t, ".") != 1 {
		add("backfill.signal_table %q: write schema.table (MySQL: database.table)", t)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level %q: use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format %q: use text or json", c.Log.Format)
	}
	if len(p) == 0 {
		return nil
	}
	return errors.New(strings.Join(p, "\n  "))
}

// NewLogger is the logger cfg asks for, on standard error.
func NewLogger(cfg LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
