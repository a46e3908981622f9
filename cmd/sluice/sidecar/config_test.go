package sidecar

import (
	"os"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sink"
)

func TestParseConfig(t *testing.T) {
	good := `source: {name: pg1, kind: postgres, dsn: "postgres://u@127.0.0.1:5432/shop", tables: [public.orders]}
nats:   {url: "", listen: "127.0.0.1:4222", store_dir: ./data}
stream: {subject_prefix: cdc, partitions: 8, replicas: 1}
`
	cfg, err := ParseConfig("good.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Stream.Name != "SLUICE_PG1" || cfg.Stream.DuplicateWindow != sink.DefaultDuplicateWindow || cfg.Checkpoint.Bucket != "sluice_checkpoints" {
		t.Errorf("defaults not applied: %+v", cfg)
	}

	enc, err := ParseConfig("enc.yaml", []byte(strings.Replace(good, "store_dir: ./data}", "store_dir: ./data, store_encryption: {key_env: K, prev_key_env: OLD_K}}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if e := enc.NATS.StoreEncryption; e == nil || e.Cipher != "chacha" || e.KeyEnv != "K" || e.PrevKeyEnv != "OLD_K" {
		t.Errorf("nats.store_encryption read as %+v", e)
	}

	tests := []struct {
		name string
		yaml string
		want []string // every fragment must appear in the one error
	}{
		{"misspelled key", strings.Replace(good, "dsn:", "dns:", 1), []string{"line 1", "unknown key source.dns"}},
		{"unknown section", good + "sinks: {}\n", []string{"unknown key sinks"}},
		{"empty file", "", []string{"source.name is required", "source.dsn is required"}},
		{"every problem at once", `source: {name: "pg 1", kind: oracle, dsn: x, tables: [orders]}
stream: {partitions: 0, replicas: 2, subject_prefix: "a..b"}
log: {level: loud}
`, []string{`source.name "pg 1"`, `source.kind "oracle"`, `"orders" is not schema.table`, "stream.partitions 0", "stream.replicas 2", "stream.subject_prefix", `log.level "loud"`}},
		{"bad table patterns", strings.Replace(good, "tables: [public.orders]}", `tables: [public.orders, "public.order_[", "*"], exclude: ["shop.x[a-", public]}`, 1),
			[]string{`source.tables: "public.order_[" is not a valid pattern`, `source.tables: "*" is not schema.table`,
				`source.exclude: "shop.x[a-" is not a valid pattern`, `source.exclude: "public" is not schema.table`}},
		{"bad duration", good + "checkpoint: {interval: soon}\n", []string{"soon"}},
		{"duplicate window below JetStream's minimum", strings.Replace(good, "replicas: 1", "replicas: 1, duplicate_window: 50ms", 1), []string{"stream.duplicate_window 50ms: use at least 100ms"}},
		{"replicas without a cluster", strings.Replace(good, "replicas: 1", "replicas: 3", 1), []string{"stream.replicas 3 needs a cluster"}},
		{"cluster problems", strings.Replace(good, "store_dir: ./data}", "store_dir: ./data, cluster: {listen: ':6222', user: u}, users: [{user: a}, {nkey: UX, user: b, permissions: write}]}", 1),
			[]string{"nats.cluster.name", "nats.cluster.routes is required", "user and nats.cluster.password go together",
				"nats.users[0]: user and password are required", "nats.users[1]: give nkey, or user and password, not both", `nats.users[1].permissions "write"`}},
		{"routes without authentication", strings.Replace(good, "store_dir: ./data}", "store_dir: ./data, server_name: a, cluster: {name: c, listen: '127.0.0.1:6222', routes: [nats://b:6222]}}", 1),
			[]string{"routes must authenticate", "nats.cluster.user and nats.cluster.password", "nats.cluster.tls"}},
		{"route TLS without a CA", strings.Replace(good, "store_dir: ./data}", "store_dir: ./data, server_name: a, cluster: {name: c, listen: '127.0.0.1:6222', routes: [nats://b:6222], tls: {cert: c.pem, key: k.pem}}}", 1),
			[]string{"nats.cluster.tls needs cert, key and ca"}},
		{"open client port without logins", strings.Replace(good, `listen: "127.0.0.1:4222"`, `listen: "0.0.0.0:4222"`, 1),
			[]string{"nats.listen 0.0.0.0:4222 is reachable from other hosts", "nats.users", "verify_clients", "127.0.0.1"}},
		{"statement timeout", good + "backfill: {statement_timeout: 0s}\n", []string{"backfill.statement_timeout 0s"}},
		{"misspelled cluster key", strings.Replace(good, "store_dir: ./data}", "store_dir: ./data, cluster: {routs: []}}", 1), []string{"unknown key nats.cluster.routs"}},
		{"unset variable", strings.Replace(good, "u@", "${SLUICE_TEST_UNSET_VAR}@", 1), []string{"SLUICE_TEST_UNSET_VAR is not set"}},
		{"backfill and privacy problems", good + "backfill: {chunk_size: 1, on_gap: ignore}\nprivacy: {hash_key_env: X, hash_key_vault: {path: p}}\n",
			[]string{"backfill.chunk_size must be at least 2", `backfill.on_gap "ignore"`, "not both", "hash_key_vault needs path and field", "source.credentials.vault"}},
		{"privacy on_missing_column", good + "privacy: {on_missing_column: ignore}\n", []string{`privacy.on_missing_column "ignore": use halt`}},
		{"store encryption problems", strings.Replace(good, "store_dir: ./data}", "store_dir: ./data, store_encryption: {cipher: des, key_env: K, key_vault: {path: p}, prev_key_env: K, prev_key_vault: {path: q, field: f}}}", 1),
			[]string{`nats.store_encryption.cipher "des": use chacha (the default) or aes`, "nats.store_encryption: set key_env or key_vault, not both",
				"nats.store_encryption: set prev_key_env or prev_key_vault, not both", "prev_key_env and key_env name the same variable",
				"nats.store_encryption.key_vault needs path and field", "nats.store_encryption.key_vault reads Vault with source.credentials.vault",
				"nats.store_encryption.prev_key_vault reads Vault"}},
		{"store encryption without a key", strings.Replace(good, "store_dir: ./data}", "store_dir: ./data, store_encryption: {cipher: aes}}", 1),
			[]string{"nats.store_encryption needs the key: key_env", "key_vault"}},
		{"store encryption with nats.url", strings.Replace(good, `url: "", listen: "127.0.0.1:4222", store_dir: ./data`, `url: "nats://n:4222", store_encryption: {key_env: K}`, 1),
			[]string{"nats.store_encryption encrypts the embedded server's store; with nats.url"}},
		{"misspelled store encryption key", strings.Replace(good, "store_dir: ./data}", "store_dir: ./data, store_encryption: {key_evn: K}}", 1),
			[]string{"unknown key nats.store_encryption.key_evn"}},
		{"contract problems", good + "contracts: {orders: {policy: maybe}}\n", []string{"schema.table", "warn, dlq or halt"}},
		{"source TLS problems", strings.Replace(good, "tables: [public.orders]}", "tables: [public.orders], tls: {mode: preferred, cert: c.pem, ca: /nonexistent/ca.pem}}", 1),
			[]string{`source.tls.mode "preferred"`, "source.tls.cert and source.tls.key go together", "source.tls.ca: cannot read the CA file"}},
		{"misspelled source TLS key", strings.Replace(good, "tables: [public.orders]}", "tables: [public.orders], tls: {mdoe: require}}", 1), []string{"unknown key source.tls.mdoe"}},
		{"misspelled contract key", good + "contracts: {public.orders: {columns: {a: {typ: string}}}}\n", []string{"unknown key contracts.<table>.columns.<column>.typ"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("bad.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestConfigEnvironment(t *testing.T) {
	t.Setenv("SLUICE_TEST_POD", "pg-7")
	t.Setenv("SLUICE_TEST_PW", "s3cret")
	cfg, err := ParseConfig("env.yaml", []byte(`source: {name: "${SLUICE_TEST_POD}", dsn: "postgres://u@h/db"}
nats: {server_name: "${SLUICE_TEST_POD}", users: [{user: r, password: "${SLUICE_TEST_PW}", permissions: read}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source.Name != "pg-7" || cfg.NATS.ServerName != "pg-7" || cfg.NATS.Users[0].Password != "s3cret" {
		t.Fatalf("variables not expanded: %+v %+v", cfg.Source, cfg.NATS)
	}
	if cfg.Stream.Name != "SLUICE_PG_7" {
		t.Errorf("stream name %q from an expanded source name", cfg.Stream.Name)
	}
}

// The configuration in README.md is a valid one.
func TestREADMEConfig(t *testing.T) {
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "## Configuration")
	start := strings.Index(doc[i:], "```yaml\n") + i + len("```yaml\n")
	end := strings.Index(doc[start:], "```") + start
	t.Setenv("ANALYTICS_PASSWORD", "x")
	t.Setenv("ROUTE_PASSWORD", "y")
	cfg, err := ParseConfig("README.md", []byte(doc[start:end]))
	if err != nil {
		t.Fatalf("README's configuration: %v", err)
	}
	if cfg.Backfill.ChunkSize != 2048 || cfg.Privacy.Columns["public.users.ssn"] != "mask" {
		t.Errorf("README's configuration read as %+v %+v", cfg.Backfill, cfg.Privacy)
	}
}
