package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/credentials"
)

// ErrBlocked is sluice check finding something that stops sluice run.
var ErrBlocked = errors.New("prerequisites missing")

// Check prints one line per check, "ok" or "FAIL" with the fix, and
// returns ErrBlocked when any failed.
func Check(ctx context.Context, w io.Writer, configPath string) error {
	failed := 0
	report := func(what string, problems ...string) {
		if len(problems) == 0 {
			fmt.Fprintf(w, "ok    %s\n", what)
			return
		}
		for _, p := range problems {
			failed++
			fmt.Fprintf(w, "FAIL  %s: %s\n", what, p)
		}
	}
	cfg, err := LoadConfig(configPath)
	if err != nil {
		report("config "+configPath, err.Error())
		return fmt.Errorf("%w: 1 problem", ErrBlocked)
	}
	report("config " + configPath)

	var vault *credentials.Vault
	if c := cfg.Source.Credentials; c != nil && c.Vault != nil {
		vc := *c.Vault
		vc.StartupTimeout = 10 * time.Second // a preflight does not wait out a sealed Vault
		v, err := credentials.New(ctx, vc, slog.New(slog.DiscardHandler))
		if err == nil {
			_, err = v.Login(ctx)
		}
		if err != nil {
			report("Vault login", err.Error())
		} else {
			report("Vault login")
			vault = v
		}
	}
	var captured sources.Catalog
	if vault != nil || cfg.Source.Credentials == nil {
		captured = checkSource(ctx, w, report, cfg, vault)
	}
	if warning := SourceTLSWarning(cfg.Source); warning != "" {
		// A warning, not a failure: sluice run starts, and says the same.
		fmt.Fprintf(w, "WARN  TLS: %s\n", warning)
	}
	privacy, err := newPrivacy(ctx, cfg.Privacy, vault, nil)
	if err != nil {
		report("privacy", err.Error())
	} else if captured.Tables != nil {
		checkCoverage(ctx, w, report, captured.Tables, privacy)
	}
	if cfg.NATS.URL != "" {
		report("NATS at nats.url", checkNATS(ctx, cfg)...)
	} else {
		report("NATS store "+cfg.NATS.StoreDir, checkStoreDir(cfg.NATS.StoreDir)...)
		// The key is checked against the store as sluice run would, before
		// nats-server opens anything.
		enc, err := storeEncryption(ctx, cfg.NATS, vault)
		if err == nil {
			err = sink.CheckStoreKey(cfg.NATS.StoreDir, enc)
		}
		if err != nil {
			report("NATS store encryption", err.Error())
		} else if enc != nil {
			report("NATS store encryption (" + enc.Cipher + ")")
		}
		// Who can reach the client and route ports: an open port or an
		// unauthenticated route is a problem, named with its fix.
		report("NATS exposure (client "+cfg.NATS.Listen+routeNote(cfg)+")", sink.CheckExposure(ServerConfig(cfg))...)
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d problems", ErrBlocked, failed)
	}
	fmt.Fprintln(w, "sluice run can start")
	return nil
}

// checkSource reports what the source's driver finds in the database,
// and returns what would be captured.
func checkSource(ctx context.Context, w io.Writer, report func(string, ...string), cfg Config, vault *credentials.Vault) sources.Catalog {
	pf := cfg.Source.Driver().Check(ctx, sourceSpec(cfg, vault, NewLogger(cfg.Log)))
	report(cfg.Source.Kind+" source "+cfg.Source.Name, pf.Problems...)
	if pf.Transport != nil {
		report("TLS (query): " + pf.Transport.String())
	}
	printKeys(w, pf.Catalog)
	if len(cfg.Source.Exclude) > 0 || slices.ContainsFunc(cfg.Source.Tables, sources.IsTablePattern) {
		printResolved(w, pf.Catalog.Tables)
	}
	for _, ok := range pf.Passed {
		report(ok)
	}
	for _, warning := range pf.Warnings {
		fmt.Fprintf(w, "WARN  %s\n", warning)
	}
	return pf.Catalog
}

// checkCoverage prints what leaves sluice of each captured table's
// columns, and fails the policies that match no column.
func checkCoverage(ctx context.Context, w io.Writer, report func(string, ...string), captured []sources.CapturedTable, privacy *schemas.Privacy) {
	columns := make(map[string][]string, len(captured))
	for _, t := range captured {
		columns[t.Key.Table] = t.Columns
	}
	tables := slices.Sorted(maps.Keys(columns))
	for _, t := range tables {
		var policies map[string]schemas.Policy
		if privacy != nil {
			policies = privacy.Policies(t)
		}
		var hidden, clear []string
		for _, c := range columns[t] {
			if p := policies[c]; p != "" {
				hidden = append(hidden, c+" "+string(p))
			} else {
				clear = append(clear, c)
			}
		}
		line := "no policy"
		if len(hidden) > 0 {
			line = strings.Join(hidden, ", ")
		}
		fmt.Fprintf(w, "      privacy of %s: %s; as they are: %s\n", t, line, strings.Join(clear, ", "))
	}
	if privacy == nil {
		return
	}
	current := func(_ context.Context, t string) ([]string, error) { return columns[t], nil }
	if err := privacy.CheckCoverage(ctx, tables, current, nil); err != nil {
		report("privacy coverage", err.Error()+" (sluice run also accepts a column of an earlier registered shape of the table: a renamed column)")
		return
	}
	report("privacy coverage: every policy names a captured column")
}

func routeNote(cfg Config) string {
	if c := cfg.NATS.Cluster; c != nil {
		return ", routes " + c.Listen
	}
	return ""
}

// checkStoreDir tells whether the embedded server can keep its store.
func checkStoreDir(dir string) []string {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return []string{fmt.Sprintf("cannot create it: %v (set nats.store_dir to a writable directory)", err)}
	}
	f, err := os.CreateTemp(dir, ".sluice-check-*")
	if err != nil {
		return []string{fmt.Sprintf("not writable: %v (give sluice's user write access, or set nats.store_dir)", err)}
	}
	f.Close()
	os.Remove(filepath.Clean(f.Name()))
	return nil
}

// checkNATS connects to the external NATS and asks JetStream.
func checkNATS(ctx context.Context, cfg Config) []string {
	conns, err := connectNATS(cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return []string{err.Error()}
	}
	defer conns.shutdown()
	js, err := jetstream.New(conns.events)
	if err == nil {
		_, err = js.AccountInfo(ctx)
	}
	if err != nil {
		return []string{fmt.Sprintf("JetStream does not answer: %v (is JetStream enabled for this account?)", err)}
	}
	return nil
}
