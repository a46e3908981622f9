package sidecar

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/sluice-cdc/sluice/backfill"
	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/capture"
	"github.com/sluice-cdc/sluice/sources/credentials"
)

// Options are what a run takes besides its config: the command line's.
type Options struct {
	// Backfill lists the tables (schema.table) to backfill alongside
	// streaming (--backfill).
	Backfill []string
	// Version is the build's version, for the log.
	Version string
	// Metrics is where the run registers its metrics, served on
	// http.listen; nil means a registry of its own. A program that embeds
	// sluice passes its own to read or serve them (with http.listen set,
	// the Go and process collectors are registered in it too).
	Metrics *prometheus.Registry
}

// Run is sluice run: it captures until ctx ends and returns nil after a
// clean shutdown, or the error that stopped it.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts Options) error {
	var vault *credentials.Vault
	if c := cfg.Source.Credentials; c != nil && c.Vault != nil {
		v, err := credentials.New(ctx, *c.Vault, log.With("credentials", "vault"))
		if err != nil {
			return err
		}
		vault = v
	}
	privacy, err := newPrivacy(ctx, cfg.Privacy, vault, log)
	if err != nil {
		return err
	}
	if w := SourceTLSWarning(cfg.Source); w != "" {
		log.Warn("the source connection is not verify-full TLS", "setting", "source.tls.mode", "warning", w)
	}
	joined := &joinedTables{wake: make(chan struct{}, 1)}
	src, err := openSource(ctx, cfg, vault, joined.add, log)
	if err != nil {
		return err
	}
	defer src.Close(context.Background())

	enc, err := storeEncryption(ctx, cfg.NATS, vault)
	if err != nil {
		return err
	}
	conns, err := connectNATS(cfg, enc, log)
	if err != nil {
		return err
	}
	defer conns.shutdown()
	nc := conns.events
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.Stream.Window*2),
		jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	// The checkpoint bucket and the control subjects live apart from the
	// events (embedded server: another account), where no consumer a
	// reader creates can deliver into them.
	stateJS, err := jetstream.New(conns.control)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	wait := cfg.NATS.StartupTimeout
	if err := sink.WaitJetStream(ctx, js, log, wait); err != nil {
		return err
	}
	var stream jetstream.Stream
	err = sink.Retry(ctx, log, "create or check the stream", wait, func(ctx context.Context) (err error) {
		stream, err = sink.EnsureStream(ctx, js, sink.StreamConfig{
			Name:            cfg.Stream.Name,
			Prefix:          cfg.Stream.SubjectPrefix,
			Source:          cfg.Source.Name,
			Partitions:      cfg.Stream.Partitions,
			Replicas:        cfg.Stream.Replicas,
			MaxAge:          cfg.Stream.MaxAge,
			DuplicateWindow: cfg.Stream.DuplicateWindow,
		})
		return err
	})
	if err != nil {
		return err
	}
	var store *checkpoint.Store
	err = sink.Retry(ctx, log, "open the checkpoint bucket", wait, func(ctx context.Context) (err error) {
		store, err = checkpoint.Open(ctx, stateJS, cfg.Checkpoint.Bucket, cfg.Stream.Replicas)
		return err
	})
	if err != nil {
		return err
	}
	// No checkpoint: the first start, whose tables all get their initial
	// snapshot (backfill.initial).
	var firstStart bool
	err = sink.Retry(ctx, log, "read the checkpoint", wait, func(ctx context.Context) error {
		_, ok, err := store.Load(ctx, cfg.Source.Name)
		firstStart = !ok
		return err
	})
	if err != nil {
		return err
	}
	// Privacy fails closed: a policy that names no captured column would
	// let the value it was meant to hide leave in clear. A column of an
	// earlier registered shape counts, for a column renamed since.
	if privacy != nil {
		former := func(ctx context.Context, table string) ([]string, error) {
			return formerColumns(ctx, store, cfg.Source.Name, table)
		}
		if err := privacy.CheckCoverage(ctx, src.Tables(), src.Columns, former); err != nil {
			return err
		}
	}
	// Served on http.listen, when set.
	metrics := opts.Metrics
	if metrics == nil {
		metrics = prometheus.NewRegistry()
	}
	bf := backfill.New(backfill.Config{
		Source: cfg.Source.Name, ChunkSize: cfg.Backfill.ChunkSize, OnGap: cfg.Backfill.OnGap,
		StatementTimeout: cfg.Backfill.StatementTimeout,
		Metrics:          backfill.NewMetrics(metrics, cfg.Source.Name), Log: log,
	}, src, store)
	var contracts *schemas.Contracts
	if len(cfg.Contracts) > 0 {
		if contracts, err = schemas.NewContracts(cfg.Contracts); err != nil {
			return err
		}
	}
	breaches := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_contract_breaches_total",
		Help: "Events and shapes that broke their table's data contract, by policy."}, []string{"source", "table", "policy"})
	metrics.MustRegister(breaches)
	pipelineMetrics := capture.NewMetrics(metrics, cfg.Source.Name)
	if src.RetainedBytes() >= 0 {
		metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_source_lag_bytes",
			ConstLabels: prometheus.Labels{"source": cfg.Source.Name},
			Help:        "Log the database keeps for sluice: how far its position is behind the server's (postgres: the WAL the replication slot holds)."},
			func() float64 { return float64(src.RetainedBytes()) }))
	}
	err = sink.Retry(ctx, log, "read the backfill jobs", wait, func(ctx context.Context) error { return bf.Load(ctx) })
	if err != nil {
		return err
	}
	registry := schemas.NewRegistry(cfg.Source.Name, store)
	// Every table's first shape is announced, the tables captured at start
	// too: consumers (sluice apply --create) learn each table's columns
	// and key from the stream itself.
	registry.AnnounceFirstShapes(nil)
	p, err := capture.New(ctx, capture.Config{
		SourceName:         cfg.Source.Name,
		SourceKind:         cfg.Source.Kind,
		Database:           src.Database(),
		Prefix:             cfg.Stream.SubjectPrefix,
		Partitions:         cfg.Stream.Partitions,
		MaxPayload:         int(nc.MaxPayload()),
		Window:             cfg.Stream.Window,
		CheckpointInterval: cfg.Checkpoint.Interval,
		StartupTimeout:     wait,
		Tap:                bf,
		Transform:          transform(privacy),
		Schemas:            registry,
		Contracts:          contracts,
		OnBreach: func(table, policy string) {
			breaches.WithLabelValues(cfg.Source.Name, table, policy).Inc()
		},
		Metrics: pipelineMetrics,
		OnGap:   bf.OnGap,
		Log:     log,
	}, src, store, js, stream)
	if err != nil {
		return err
	}
	if len(opts.Backfill) > 0 {
		if _, err := bf.Start(ctx, opts.Backfill, nil, backfill.ReasonFlag); err != nil {
			return fmt.Errorf("--backfill: %w", err)
		}
	}
	if cfg.Backfill.Initial {
		// Consumers get the whole table, not only what changes from now.
		if _, err := bf.Initial(ctx, firstStart); err != nil {
			return fmt.Errorf("initial snapshot (backfill.initial): %w", err)
		}
	}
	log.Info("sluice running", "version", opts.Version, "stream", cfg.Stream.Name,
		"subjects", cfg.Stream.SubjectPrefix+"."+cfg.Source.Name+".>", "partitions", cfg.Stream.Partitions)
	// Every goroutine of the run belongs to g: the first to fail stops the
	// others, and Run returns its error (a dead HTTP listener included).
	// The pipeline stops on a failure elsewhere as on SIGTERM: it drains
	// and writes its checkpoint.
	g, gctx := errgroup.WithContext(ctx)
	// The backfill runner and the watchers stop when the pipeline has
	// drained: a backfill's last chunk is either stored with its cursor or
	// read again after restart.
	bctx, stopBackfill := context.WithCancel(gctx)
	defer stopBackfill()
	if err := bf.Serve(bctx, conns.control); err != nil {
		return err
	}
	metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_stream_max_age_seconds",
		ConstLabels: prometheus.Labels{"source": cfg.Source.Name},
		Help:        "How long the event stream keeps a message (stream.max_age); 0 = forever."},
		func() float64 { return cfg.Stream.MaxAge.Seconds() }))
	if cfg.HTTP.Listen != "" {
		serve, err := listenHTTP(cfg.HTTP, metrics, pipelineMetrics, nc, js, log)
		if err != nil {
			return err
		}
		g.Go(func() error { return serve(bctx) })
	}
	g.Go(func() error {
		// Consumers that fall behind the stream's retention miss events:
		// say so while they can still catch up.
		sink.WatchConsumers(bctx, metrics, cfg.Source.Name, stream, 30*time.Second, log)
		return nil
	})
	g.Go(func() error {
		pipelineMetrics.WatchSkew(bctx, metrics, cfg.Stream.Partitions,
			capture.SkewConfig{Factor: cfg.Stream.HotPartitionFactor, Window: cfg.Stream.HotPartitionWindow}, log)
		return nil
	})
	g.Go(func() error { return bf.Run(bctx, p) })
	g.Go(func() error {
		joined.snapshot(bctx, bf, cfg.Backfill.Initial, log)
		return nil
	})
	g.Go(func() error {
		defer stopBackfill()
		return p.Run(gctx)
	})
	return g.Wait()
}

// joinedTables queues the tables the source starts capturing while it
// runs: the source tells them from its stream, which must not wait for
// a backfill to be queued.
type joinedTables struct {
	mu     sync.Mutex
	tables []string
	wake   chan struct{}
}

func (j *joinedTables) add(table string) {
	j.mu.Lock()
	j.tables = append(j.tables, table)
	j.mu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// snapshot gives each table that joins its initial snapshot (with
// backfill.initial), until ctx ends: consumers get its rows from before
// it was captured, as they do for the tables captured at start.
func (j *joinedTables) snapshot(ctx context.Context, bf *backfill.Manager, initial bool, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-j.wake:
		}
		j.mu.Lock()
		tables := j.tables
		j.tables = nil
		j.mu.Unlock()
		if !initial {
			continue
		}
		for _, t := range tables {
			if _, err := bf.Start(ctx, []string{t}, nil, backfill.ReasonInitial); err != nil && ctx.Err() == nil {
				log.Error("initial snapshot of a table created while sluice runs not started: run sluice backfill "+t+" (consumers have its changes, not its earlier rows)",
					"table", t, "error", err)
			}
		}
	}
}

// newPrivacy builds the column policies, reading the hash key; nil when
// there are none.
func newPrivacy(ctx context.Context, cfg PrivacyConfig, vault *credentials.Vault, log *slog.Logger) (*schemas.Privacy, error) {
	if len(cfg.Columns) == 0 {
		return nil, nil
	}
	key, _, err := readKey(ctx, "privacy.hash_key", cfg.HashKeyEnv, cfg.HashKeyVault, vault, schemas.MinHashKey)
	if err != nil {
		return nil, err
	}
	p, err := schemas.NewPrivacy(cfg.Columns, []byte(key))
	if err != nil {
		return nil, err
	}
	return p, p.MissingColumn(cfg.OnMissingColumn, log)
}

// formerColumns lists the columns of a table's registered shapes.
func formerColumns(ctx context.Context, st schemas.Store, source, table string) ([]string, error) {
	shapes, err := schemas.LoadShapes(ctx, st, source, table)
	if err != nil {
		return nil, err
	}
	var cols []string
	for _, s := range shapes {
		for _, c := range s.Columns {
			if !slices.Contains(cols, c.Name) {
				cols = append(cols, c.Name)
			}
		}
	}
	return cols, nil
}

// readKey reads a secret from the environment variable env or from Vault
// (setting is the name both settings share, e.g. privacy.hash_key); "" when
// neither is set. where names the source for messages, never the value.
func readKey(ctx context.Context, setting, env string, v *VaultSecret, vault *credentials.Vault, minLen int) (key, where string, err error) {
	switch {
	case env != "":
		key = os.Getenv(env)
		if key == "" {
			return "", "", fmt.Errorf("%s_env: the environment variable %s is not set: set it to a secret of at least %d bytes", setting, env, minLen)
		}
		return key, "the environment variable " + env, nil
	case v != nil:
		if vault == nil {
			return "", "", fmt.Errorf("%s_vault: no Vault login: it is read with source.credentials.vault's login", setting)
		}
		if key, err = vault.Secret(ctx, v.Mount, v.Path, v.Field); err != nil {
			return "", "", fmt.Errorf("%s_vault: %w", setting, err)
		}
		mount := v.Mount
		if mount == "" {
			mount = "secret"
		}
		return key, fmt.Sprintf("field %s of the Vault secret %s/%s", v.Field, mount, v.Path), nil
	}
	return "", "", nil
}

// storeEncryption reads the keys of nats.store_encryption; nil when it is
// not set.
func storeEncryption(ctx context.Context, cfg NATSConfig, vault *credentials.Vault) (*sink.StoreEncryption, error) {
	e := cfg.StoreEncryption
	if e == nil || cfg.URL != "" {
		return nil, nil
	}
	enc := &sink.StoreEncryption{Cipher: e.Cipher}
	for _, k := range []struct {
		setting string
		env     string
		vault   *VaultSecret
		to      *string
	}{
		{"nats.store_encryption.key", e.KeyEnv, e.KeyVault, &enc.Key},
		{"nats.store_encryption.prev_key", e.PrevKeyEnv, e.PrevKeyVault, &enc.PrevKey},
	} {
		key, where, err := readKey(ctx, k.setting, k.env, k.vault, vault, sink.MinStoreKey)
		if err != nil {
			return nil, err
		}
		if where != "" && len(key) < sink.MinStoreKey {
			return nil, fmt.Errorf("%s: the key in %s is %d bytes: use at least %d (e.g. openssl rand -hex 32)", k.setting, where, len(key), sink.MinStoreKey)
		}
		*k.to = key
	}
	return enc, nil
}

// openSource connects the source with its driver; onTableAdded is told of
// each table it starts capturing while it runs.
func openSource(ctx context.Context, cfg Config, vault *credentials.Vault, onTableAdded func(string), log *slog.Logger) (sources.Source, error) {
	spec := sourceSpec(cfg, vault, log)
	spec.OnTableAdded = onTableAdded
	return cfg.Source.Driver().Open(ctx, spec)
}

// sourceSpec is what the source's driver opens it from: the one mapping
// of the config onto it, for sluice run and sluice check alike.
func sourceSpec(cfg Config, vault *credentials.Vault, log *slog.Logger) sources.Spec {
	spec := sources.Spec{Config: cfg.Source.Config, Settings: cfg.Source.Settings, SignalTable: cfg.Backfill.SignalTable,
		Log: log.With("source", cfg.Source.Name)}
	if vault != nil {
		spec.Credentials = vault
	}
	return spec
}

// sourceTLSWarning is the warning for a source off loopback whose
// connections are not verify-full, "" when there is none.
func SourceTLSWarning(cfg SourceConfig) string {
	return cfg.Driver().TLSWarning(sources.Spec{Config: cfg.Config, Settings: cfg.Settings})
}

// natsConns are sluice's own connections: events for the stream and its
// publisher, control for the checkpoint bucket and the control subjects.
// With nats.url both are one connection; the embedded server puts them in
// two accounts (sink.AccountEvents, sink.AccountState).
type natsConns struct {
	events, control *nats.Conn
	shutdown        func()
}

// connectNATS starts the embedded server, or connects to nats.url.
// enc encrypts the embedded server's store (nil: no encryption).
func connectNATS(cfg Config, enc *sink.StoreEncryption, log *slog.Logger) (natsConns, error) {
	if cfg.NATS.URL != "" {
		opts := []nats.Option{nats.Name("sluice-" + cfg.Source.Name), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(false)}
		if t := cfg.NATS.TLS; t != nil && t.CA != "" {
			opts = append(opts, nats.RootCAs(t.CA))
		}
		nc, err := nats.Connect(cfg.NATS.URL, opts...)
		if err != nil {
			return natsConns{}, fmt.Errorf("connect to NATS at nats.url: %w (is it running, and are the login and nats.tls.ca right?)", err)
		}
		return natsConns{events: nc, control: nc, shutdown: nc.Close}, nil
	}
	scfg := ServerConfig(cfg)
	scfg.Encryption = enc
	srv, err := sink.StartServer(scfg)
	if err != nil {
		return natsConns{}, err
	}
	encryption := "off"
	if enc != nil {
		encryption = enc.Cipher
	}
	attrs := []any{"url", srv.ClientURL(), "server_name", srv.Name(), "store_dir", cfg.NATS.StoreDir, "users", len(cfg.NATS.Users),
		"tls", cfg.NATS.TLS != nil, "store_encryption", encryption, "local_admin", srv.LocalAdminFile()}
	if c := cfg.NATS.Cluster; c != nil {
		attrs = append(attrs, "cluster", c.Name, "cluster_listen", c.Listen, "routes", len(c.Routes), "route_tls", c.TLS != nil)
	}
	log.Info("embedded NATS server listening", attrs...)
	events, err := srv.Connect("sluice-" + cfg.Source.Name)
	if err != nil {
		srv.Shutdown()
		return natsConns{}, fmt.Errorf("connect to the embedded NATS server: %w", err)
	}
	control, err := srv.ConnectControl("sluice-" + cfg.Source.Name + "-control")
	if err != nil {
		events.Close()
		srv.Shutdown()
		return natsConns{}, fmt.Errorf("connect to the embedded NATS server: %w", err)
	}
	return natsConns{events: events, control: control, shutdown: func() {
		// The pipeline has flushed by now; Drain would run on in the
		// background while the server goes away under it.
		control.Close()
		events.Close()
		srv.Shutdown()
	}}, nil
}

// serverConfig is the embedded server's configuration. A login without
// permissions is a read login: the safe default.
func ServerConfig(cfg Config) sink.ServerConfig {
	scfg := sink.ServerConfig{
		Name:         cfg.NATS.ServerName,
		Listen:       cfg.NATS.Listen,
		StoreDir:     cfg.NATS.StoreDir,
		MaxPayload:   cfg.NATS.MaxPayload,
		Prefix:       cfg.Stream.SubjectPrefix,
		Source:       cfg.Source.Name,
		Stream:       cfg.Stream.Name,
		MaxConsumers: cfg.NATS.MaxConsumers,
		MaxStore:     cfg.NATS.MaxStore,
	}
	if c := cfg.NATS.Cluster; c != nil {
		scfg.Cluster = &sink.ClusterConfig{Name: c.Name, Listen: c.Listen, Routes: c.Routes, User: c.User, Password: c.Password}
		if t := c.TLS; t != nil {
			scfg.Cluster.TLS = &sink.RouteTLSConfig{Cert: t.Cert, Key: t.Key, CA: t.CA}
		}
	}
	for _, u := range cfg.NATS.Users {
		perm := u.Permissions
		if perm == "" {
			perm = sink.PermRead
		}
		scfg.Users = append(scfg.Users, sink.User{User: u.User, Password: u.Password, Nkey: u.Nkey, Permissions: perm})
	}
	if t := cfg.NATS.TLS; t != nil {
		scfg.TLS = &sink.TLSConfig{Cert: t.Cert, Key: t.Key, CA: t.CA, VerifyClients: t.VerifyClients}
	}
	return scfg
}

// transform is the pipeline's Transform: none without policies.
func transform(p *schemas.Privacy) capture.Transform {
	if p == nil {
		return nil
	}
	return p
}
