package main

import (
	"errors"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// nats.store_encryption reaches the embedded server: a canary captured
// from PostgreSQL is in the stream, and in no file of the store; the key
// never shows in the log; an empty key variable or another key stops
// sluice naming the setting, and the right key then finds the events.
func TestStoreEncryptionRun(t *testing.T) {
	const canary, key = "canary-ssn-731-44-0192", "store-key-0123456789abcdef0123456789abcdef"
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.users")
	t.Setenv("SLUICE_TEST_STORE_KEY", key)
	e.setYAML("nats:   {", "nats:   {store_encryption: {cipher: aes, key_env: SLUICE_TEST_STORE_KEY}, ")
	e.exec(`CREATE TABLE users (id INT PRIMARY KEY, ssn TEXT)`)
	stop, logs := e.startRun()
	e.exec(`INSERT INTO users VALUES (1, $1)`, canary)
	events := readRows(t, e.natsURL(), e.cfg.Stream.Name, 1, time.Minute)
	if !strings.Contains(events[0].raw, canary) {
		t.Fatalf("the event does not carry the canary: %s", events[0].raw)
	}
	// The checkpoint is written once JetStream has the event.
	waitCheckpoint(t, e)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "store_encryption=aes") || strings.Contains(logs.String(), key) {
		t.Fatalf("the log should name the cipher and never the key:\n%s", logs)
	}
	found, files := natstest.FilesHolding(t, e.cfg.NATS.StoreDir, canary)
	if len(found) > 0 {
		t.Fatalf("the canary is readable in %v", found)
	}
	t.Logf("%d store files, none holds the canary", files)

	t.Setenv("SLUICE_TEST_STORE_KEY", "")
	err, _ := runErr(t, e.cfg)
	mentions(t, err, "nats.store_encryption.key_env", "SLUICE_TEST_STORE_KEY", "not set")
	t.Setenv("SLUICE_TEST_STORE_KEY", strings.Repeat("x", 40))
	err, _ = runErr(t, e.cfg)
	mentions(t, err, "nats.store_encryption", "does not match the store", "prev_key_env")
	out, err := runCheck(t, e)
	if !errors.Is(err, sidecar.ErrBlocked) || !strings.Contains(out, "FAIL  NATS store encryption: nats.store_encryption: the key does not match the store") {
		t.Fatalf("sluice check with another key = %v:\n%s", err, out)
	}

	t.Setenv("SLUICE_TEST_STORE_KEY", key)
	e.startRun()
	// The table's first shape and its row.
	if n := streamCount(t, e.natsURL(), e.cfg.Stream.Name); n != 2 {
		t.Fatalf("the stream holds %d events after the refused starts, want 2", n)
	}
}
