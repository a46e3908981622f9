package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources/credentials"
	"github.com/sluice-cdc/sluice/sources/credentials/vaulttest"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

const pgAdminPassword = "adm1n-pw-4-tests"

// sluiceToken returns a token holding exactly the policy sluice ships,
// written for source pg1 as deploy/vault/setup.sh writes it.
func sluiceToken(t *testing.T, v *vaulttest.Server) string {
	t.Helper()
	return sourceToken(t, v, "pg1")
}

func sourceToken(t *testing.T, v *vaulttest.Server, source string) string {
	t.Helper()
	ctx := context.Background()
	tmpl, err := os.ReadFile("../../deploy/vault/sluice-policy.hcl.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Policy(ctx, "sluice-"+source, strings.ReplaceAll(string(tmpl), "<source>", source)); err != nil {
		t.Fatal(err)
	}
	token, err := v.Token(ctx, []string{"sluice-" + source}, "1h")
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// useVault points the env's source at Vault with a token file, and strips
// the login from its DSN.
func (e *env) useVault(v *vaulttest.Server, token string, creds credentials.Config) {
	e.t.Helper()
	file := filepath.Join(e.dir, "vault-token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	creds.Address = v.Addr()
	creds.Auth = credentials.Auth{Method: "token", TokenFile: file}
	e.cfg.Source.Credentials = &sidecar.CredentialsConfig{Vault: &creds}
	if err := e.cfg.Validate(); err != nil {
		e.t.Fatal(err)
	}
}

// assertNoSecret fails if a password shows up in logs or events.
func assertNoSecret(t *testing.T, secret string, where map[string]string) {
	t.Helper()
	for name, text := range where {
		if strings.Contains(text, secret) {
			t.Errorf("the password appears in %s", name)
		}
	}
}

func TestVaultStaticLoginPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t, pgtest.Options{Password: pgAdminPassword})
	v := vaulttest.New(t)
	e := newEnv(t, pg, "public.items")
	e.exec(`CREATE ROLE app LOGIN REPLICATION PASSWORD 'app-s3cret-pw'`)
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int)`)
	adminSignalTable(e, "app")
	if err := v.PutKV(context.Background(), "sluice/pg1", map[string]any{"username": "app", "password": "app-s3cret-pw"}); err != nil {
		t.Fatal(err)
	}
	e.cfg.Source.DSN = fmt.Sprintf("postgres://127.0.0.1:%d/shop?sslmode=disable", pg.Port())
	// The privacy hash key comes from Vault too, with the same login.
	if err := v.PutKV(context.Background(), "sluice/pg1/hash", map[string]any{"key": testHashKey}); err != nil {
		t.Fatal(err)
	}
	e.cfg.Privacy = sidecar.PrivacyConfig{Columns: map[string]string{"public.items.v": "hash"}, HashKeyVault: &sidecar.VaultSecret{Path: "sluice/pg1/hash", Field: "key"}}
	// And the store's encryption key.
	const storeKey = "store-key-from-vault-0123456789abcdef"
	if err := v.PutKV(context.Background(), "sluice/pg1/store", map[string]any{"key": storeKey}); err != nil {
		t.Fatal(err)
	}
	e.cfg.NATS.StoreEncryption = &sidecar.StoreEncryptionConfig{Cipher: "chacha", KeyVault: &sidecar.VaultSecret{Path: "sluice/pg1/store", Field: "key"}}
	e.useVault(v, sluiceToken(t, v), credentials.Config{KV: &credentials.KV{Path: "sluice/pg1"}})

	stop, logs := e.startRun()
	for i := range 10 {
		e.exec(fmt.Sprintf("INSERT INTO items VALUES (%d, 0)", i))
	}
	events := readRows(t, e.natsURL(), e.cfg.Stream.Name, 10, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var raw strings.Builder
	for _, ev := range events {
		raw.WriteString(ev.raw)
		if string(ev.After["v"]) != hmacOf("0") {
			t.Fatalf("v is not hashed with the key from Vault: %s", ev.raw)
		}
	}
	assertNoSecret(t, "app-s3cret-pw", map[string]string{"the log": logs.String(), "the events": raw.String()})
	assertNoSecret(t, testHashKey, map[string]string{"the log": logs.String(), "the events": raw.String()})
	assertNoSecret(t, storeKey, map[string]string{"the log": logs.String()})
	if err := sink.CheckStoreKey(e.cfg.NATS.StoreDir, nil); !errors.Is(err, sink.ErrStoreEncrypted) {
		t.Fatalf("the store is not encrypted: %v", err)
	}
	if err := sink.CheckStoreKey(e.cfg.NATS.StoreDir, &sink.StoreEncryption{Key: storeKey}); err != nil {
		t.Fatalf("the store is not encrypted with the key from Vault: %v", err)
	}
}

// streamRows writes a row every 20ms for d while sluice runs, calls midway
// once halfway through, and checks the consumer got every row exactly once.
// It returns sluice's log.
func streamRows(t *testing.T, e *env, db crashDB, d time.Duration, midway func()) string {
	t.Helper()
	stop, logs := e.startRun()
	start := time.Now()
	id := 0
	for time.Since(start) < d {
		id++
		if err := db.tx([]string{fmt.Sprintf("INSERT INTO items VALUES (%d, 0, 'x')", id)}); err != nil {
			t.Fatal(err)
		}
		if midway != nil && time.Since(start) > d/2 {
			midway()
			midway = nil
		}
		time.Sleep(20 * time.Millisecond) // the workload: a row every 20ms
	}
	events := readRows(t, e.natsURL(), e.cfg.Stream.Name, id, 60*time.Second)
	// Once the checkpoint covers the stream, a duplicate would be in it;
	// the table's first shape is announced once.
	e.waitCheckpointed(time.Minute)
	if n := streamCount(t, e.natsURL(), e.cfg.Stream.Name); n != uint64(1+id) {
		t.Fatalf("stream holds %d messages for %d rows and the table's first shape; log:\n%s", n, id, logs)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ev := range events {
		key := string(ev.Key["id"])
		if seen[key] {
			t.Fatalf("row %s delivered twice", key)
		}
		seen[key] = true
	}
	t.Logf("%d rows, every row once", id)
	return logs.String()
}

// dynamicRotation streams while Vault issues short-lived logins: several
// rotations happen, and the consumer still sees every row exactly once.
func dynamicRotation(t *testing.T, e *env, v *vaulttest.Server, role string, db crashDB) {
	t.Helper()
	e.useVault(v, sourceToken(t, v, e.cfg.Source.Name), credentials.Config{Database: &credentials.Database{Role: role}})
	logs := streamRows(t, e, db, 25*time.Second, nil)
	rotations := strings.Count(logs, "database login expiring")
	if rotations < 2 {
		t.Fatalf("%d rotations in 25s; want at least 2. log:\n%s", rotations, logs)
	}
	// A fresh login follows every rotation but perhaps the last, which the
	// end of the test may cut short.
	if n := strings.Count(logs, "database login issued by Vault"); n < rotations {
		t.Errorf("%d logins issued for %d rotations", n, rotations)
	}
	t.Logf("%d login rotations", rotations)
}

// pgVaultRole defines a database secrets engine role issuing Postgres
// logins with REPLICATION.
func pgVaultRole(t *testing.T, v *vaulttest.Server, pg *pgtest.Server, ttl, maxTTL string) {
	t.Helper()
	err := v.DatabaseRole(context.Background(), "pg", "postgresql-database-plugin",
		fmt.Sprintf("postgresql://{{username}}:{{password}}@127.0.0.1:%d/shop?sslmode=disable", pg.Port()),
		"postgres", pgAdminPassword, "sluice-pg1",
		[]string{`CREATE ROLE "{{name}}" WITH LOGIN REPLICATION PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE sluice;`},
		[]string{`DROP ROLE IF EXISTS "{{name}}";`}, ttl, maxTTL)
	if err != nil {
		t.Fatal(err)
	}
}

func newVaultPGEnv(t *testing.T) (*env, *pgtest.Server, *vaulttest.Server) {
	pg := pgtest.New(t, pgtest.Options{Password: pgAdminPassword})
	v := vaulttest.New(t)
	e := newEnv(t, pg, "public.items")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int, note text)`)
	e.exec(`CREATE ROLE sluice NOLOGIN`)
	adminSignalTable(e, "sluice")
	e.cfg.Source.DSN = fmt.Sprintf("postgres://127.0.0.1:%d/shop?sslmode=disable", pg.Port())
	return e, pg, v
}

// A lease revoked in Vault (and its database user dropped) while sluice
// streams: the next connect is refused, sluice reads a fresh login and
// resumes with nothing lost.
func TestVaultRevokedLeasePostgres(t *testing.T) {
	t.Parallel()
	e, pg, v := newVaultPGEnv(t)
	pgVaultRole(t, v, pg, "1h", "24h")
	e.useVault(v, sluiceToken(t, v), credentials.Config{Database: &credentials.Database{Role: "sluice-pg1"}})
	conn := pgConn(t, pg)
	logs := streamRows(t, e, pgCrashDB{conn}, 6*time.Second, func() {
		ctx := context.Background()
		if err := v.Client().Sys().RevokePrefixWithContext(ctx, "database/creds/sluice-pg1"); err != nil {
			t.Fatal(err)
		}
		// Dropping a role leaves its sessions open; end them, as a DBA
		// cleaning up after a revoked login would.
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sluice'`); err != nil {
			t.Fatal(err)
		}
	})
	if !strings.Contains(logs, "the database refused the login from Vault") {
		t.Errorf("the revoked login was not refused and replaced; log:\n%s", logs)
	}
	if n := strings.Count(logs, "database login issued by Vault"); n < 2 {
		t.Errorf("%d logins issued; want a fresh one after the revocation", n)
	}
}

// AppRole tokens that can be renewed only briefly: each time the token
// nears its max TTL, sluice logs in to Vault again and takes a fresh
// database login, since the old lease dies with the old token.
func TestVaultAppRoleTokenExpiry(t *testing.T) {
	t.Parallel()
	e, pg, v := newVaultPGEnv(t)
	pgVaultRole(t, v, pg, "1h", "24h")
	sluiceToken(t, v) // writes the policy
	ctx := context.Background()
	roleID, secretID, err := v.AppRole(ctx, "sluice", []string{"sluice-pg1"}, "3s", "6s")
	if err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(e.dir, "secret-id")
	if err := os.WriteFile(secretFile, []byte(secretID), 0o600); err != nil {
		t.Fatal(err)
	}
	e.useVault(v, "", credentials.Config{Database: &credentials.Database{Role: "sluice-pg1"}})
	e.cfg.Source.Credentials.Vault.Auth = credentials.Auth{Method: "approle", RoleID: roleID, SecretIDFile: secretFile}
	logs := streamRows(t, e, pgCrashDB{pgConn(t, pg)}, 16*time.Second, nil)
	if n := strings.Count(logs, "vault token expiring"); n < 2 {
		t.Errorf("the AppRole token expired %d times in 16s; want at least 2. log:\n%s", n, logs)
	}
	assertNoSecret(t, secretID, map[string]string{"the log": logs})
}

func TestVaultDynamicLoginsPostgres(t *testing.T) {
	t.Parallel()
	e, pg, v := newVaultPGEnv(t)
	pgVaultRole(t, v, pg, "4s", "8s")
	dynamicRotation(t, e, v, "sluice-pg1", pgCrashDB{pgConn(t, pg)})
}

func TestVaultDynamicLoginsMySQL(t *testing.T) {
	t.Parallel()
	my := mysqltest.New(t)
	v := vaulttest.New(t)
	e := newMySQLEnv(t, my, "shop.items")
	e.exec(`CREATE TABLE items (id INT PRIMARY KEY, v INT, note TEXT)`)
	// Rotated logins cannot create the signal table; an admin does, once.
	e.exec(`CREATE TABLE sluice_signal (source VARCHAR(255) NOT NULL PRIMARY KEY, kind VARCHAR(16) NOT NULL, id VARCHAR(255) NOT NULL, at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))`)
	e.cfg.Source.DSN = fmt.Sprintf("nobody@tcp(%s)/shop", my.Addr())
	err := v.DatabaseRole(context.Background(), "my", "mysql-database-plugin",
		fmt.Sprintf("{{username}}:{{password}}@tcp(%s)/", my.Addr()), "root", "", "sluice-my1",
		[]string{`CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';`,
			`GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{{name}}'@'%';`,
			"GRANT SELECT ON `shop`.`items` TO '{{name}}'@'%';",
			"GRANT SELECT, INSERT, UPDATE ON `shop`.`sluice_signal` TO '{{name}}'@'%';"},
		[]string{`DROP USER IF EXISTS '{{name}}'@'%';`}, "4s", "8s")
	if err != nil {
		t.Fatal(err)
	}
	dynamicRotation(t, e, v, "sluice-my1", mysqlCrashDB{mysqlConn(t, my)})
}

// Each way Vault can fail gives one error that names it, and sluice does
// not start.
func TestVaultErrors(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t, pgtest.Options{Password: pgAdminPassword})
	v := vaulttest.New(t)
	ctx := context.Background()
	if err := v.PutKV(ctx, "sluice/pg1", map[string]any{"username": "postgres"}); err != nil {
		t.Fatal(err)
	}
	if err := v.PutKV(ctx, "sluice/pg2", map[string]any{"username": "postgres", "password": pgAdminPassword}); err != nil {
		t.Fatal(err)
	}
	token := sluiceToken(t, v)
	tests := []struct {
		name  string
		setup func(c *credentials.Config)
		want  error
		says  []string
	}{
		{"missing path", func(c *credentials.Config) { c.KV.Path = "sluice/pg1/nope" }, credentials.ErrNotFound, []string{"secret/sluice/pg1/nope", "vault kv put"}},
		{"missing field", func(c *credentials.Config) {}, credentials.ErrMissingField, []string{`no field "password"`, "password_field"}},
		{"denied", func(c *credentials.Config) { c.KV.Path = "other/pg1" }, credentials.ErrPermissionDenied, []string{"secret/other/pg1", "policy sluice-<source>"}},
		// The policy is per source: pg1's token cannot read pg2's login,
		// which exists (with a shared policy it would be read).
		{"another source's secret", func(c *credentials.Config) { c.KV.Path = "sluice/pg2" }, credentials.ErrPermissionDenied, []string{"secret/sluice/pg2"}},
		{"unreachable", func(c *credentials.Config) { c.Address = fmt.Sprintf("http://127.0.0.1:%d", natstest.FreePort(t)) }, credentials.ErrUnreachable, []string{"is Vault running", "VAULT_ADDR"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, pg, "public.t")
			e.cfg.Source.DSN = fmt.Sprintf("postgres://127.0.0.1:%d/shop?sslmode=disable", pg.Port())
			e.useVault(v, token, credentials.Config{KV: &credentials.KV{Path: "sluice/pg1"}, StartupTimeout: time.Second})
			tt.setup(e.cfg.Source.Credentials.Vault)
			err, logs := runErr(t, e.cfg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			mentions(t, err, tt.says...)
			assertNoSecret(t, token, map[string]string{"the error": err.Error(), "the log": logs})
		})
	}
	t.Run("sealed", func(t *testing.T) {
		e := newEnv(t, pg, "public.t")
		e.cfg.Source.DSN = fmt.Sprintf("postgres://127.0.0.1:%d/shop?sslmode=disable", pg.Port())
		e.useVault(v, token, credentials.Config{KV: &credentials.KV{Path: "sluice/pg1"}, StartupTimeout: time.Second})
		if err := v.Seal(ctx); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := v.Unseal(ctx); err != nil {
				t.Fatal(err)
			}
		}()
		err, logs := runErr(t, e.cfg)
		if !errors.Is(err, credentials.ErrSealed) {
			t.Fatalf("error = %v, want ErrSealed", err)
		}
		mentions(t, err, "sealed", "unseal")
		if !strings.Contains(logs, "waiting for Vault") {
			t.Errorf("a sealed Vault was not retried:\n%s", logs)
		}
	})
}

// adminSignalTable does as an admin what a login that owns nothing cannot:
// create the backfill signal table, publish it with the captured table,
// and let role write watermarks and read the tables.
func adminSignalTable(e *env, role string) {
	e.t.Helper()
	e.exec(`CREATE TABLE sluice_signal (source text PRIMARY KEY, kind text NOT NULL, id text NOT NULL, at timestamptz NOT NULL DEFAULT now())`)
	e.exec(`CREATE PUBLICATION sluice_pg1 FOR TABLE items, sluice_signal`)
	e.exec(`GRANT SELECT ON items TO ` + role)
	e.exec(`GRANT SELECT, INSERT, UPDATE ON sluice_signal TO ` + role)
}
