package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

const testHashKey = "test-hash-key-0123456789abcdef"

// clear values the stream must never carry.
var secrets = []string{"ann@example.com", "bob@example.com", "bo2@example.com", "078-05-1120", "219-09-9999", "diary entry"}

const privacyYAML = `privacy:
  hash_key_env: SLUICE_TEST_HASH_KEY
  columns: {%[1]s.users.email: hash, %[1]s.users.ssn: mask, %[1]s.users.notes: drop, %[1]s.vips.email: hash}`

func hmacOf(jsonValue string) string {
	m := hmac.New(sha256.New, []byte(testHashKey))
	m.Write([]byte(jsonValue))
	return `"` + hex.EncodeToString(m.Sum(nil)) + `"`
}

// TestPrivacyPostgres: masked, hashed and dropped columns never reach the
// stream in clear, from the log or from a backfill; a hashed key keeps
// each key on one partition, and its table gets no chunk events.
func TestPrivacyPostgres(t *testing.T) {
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.users", "public.vips")
	privacyTest(t, e, "public")
}

func TestPrivacyMySQL(t *testing.T) {
	my := mysqltest.New(t)
	e := newMySQLEnv(t, my, "shop.users", "shop.vips")
	privacyTest(t, e, "shop")
}

func privacyTest(t *testing.T, e *env, schema string) {
	t.Setenv("SLUICE_TEST_HASH_KEY", testHashKey)
	e.setYAML("replicas: 1}", "replicas: 1}\n"+strings.ReplaceAll(privacyYAML, "%[1]s", schema))
	e.exec(`CREATE TABLE users (id INT PRIMARY KEY, email TEXT, ssn TEXT, notes TEXT, age INT)`)
	e.exec(`CREATE TABLE vips (email VARCHAR(100) PRIMARY KEY, tier TEXT)`)
	// Rows from before capture reach the stream through the backfill.
	e.exec(`INSERT INTO users VALUES (1, 'ann@example.com', '078-05-1120', 'diary entry', 30)`)
	e.exec(`INSERT INTO vips VALUES ('ann@example.com', 'vip')`)
	e.backfill = []string{schema + ".users", schema + ".vips"}
	stop, logs := e.startRun()
	waitBackfills(t, logs, 2, time.Minute)
	e.exec(`INSERT INTO users VALUES (2, 'bob@example.com', '219-09-9999', 'diary entry', NULL)`)
	e.exec(`UPDATE users SET email = 'bo2@example.com', age = 41 WHERE id = 2`)
	e.exec(`INSERT INTO vips VALUES ('bob@example.com', 'gold')`)
	e.exec(`UPDATE vips SET tier = 'platinum' WHERE email = 'bob@example.com'`)
	e.exec(`DELETE FROM vips WHERE email = 'bob@example.com'`)
	e.exec(`DELETE FROM users WHERE id = 1`)

	// 2 backfill rows, chunk events of users (4 partitions), 6 changes.
	events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 2+4+6, time.Minute)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	vipSubjects := map[string]bool{}
	for _, ev := range events {
		for _, s := range secrets {
			if strings.Contains(ev.raw, s) {
				t.Fatalf("clear value %q in the stream: %s", s, ev.raw)
			}
		}
		if ev.Source.Table == "vips" {
			if ev.Op == "chunk" {
				t.Fatalf("a chunk event for a table with a hashed key: %s", ev.raw)
			}
			if ev.Source.Schema == schema && strings.Contains(ev.raw, hmacOf(`"bob@example.com"`)) {
				vipSubjects[ev.subject] = true
			}
			continue
		}
		if ev.Op == "chunk" {
			continue
		}
		row := ev.After
		if row == nil {
			row = ev.Before
		}
		if _, ok := row["notes"]; ok {
			t.Fatalf("dropped column notes in %s", ev.raw)
		}
		if ev.After != nil && string(ev.After["ssn"]) != `"***"` {
			t.Fatalf("ssn not masked: %s", ev.raw)
		}
	}
	// Every event of one hashed key is on one partition.
	if len(vipSubjects) != 1 {
		t.Fatalf("the events of one hashed key went to %d subjects: %v", len(vipSubjects), vipSubjects)
	}
	var upd *event
	for i := range events {
		if events[i].Op == "u" && events[i].Source.Table == "users" {
			upd = &events[i]
		}
	}
	if upd == nil || string(upd.After["email"]) != hmacOf(`"bo2@example.com"`) || string(upd.After["age"]) != "41" {
		t.Fatalf("update of users: want the email hashed with the key and age in clear; got %+v", upd)
	}
}

// A hash policy without its key, or a key column dropped, stops sluice
// with the fix.
func TestPrivacyErrors(t *testing.T) {
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.users")
	e.exec(`CREATE TABLE users (id INT PRIMARY KEY, email TEXT)`)
	e.setYAML("replicas: 1}", "replicas: 1}\nprivacy: {hash_key_env: SLUICE_TEST_NO_SUCH_KEY, columns: {public.users.email: hash}}")
	err, _ := runErr(t, e.cfg)
	mentions(t, err, "privacy.hash_key_env", "SLUICE_TEST_NO_SUCH_KEY", "not set")

	// Fails closed: a policy that names no captured column (wrong case,
	// uncaptured table) stops sluice before anything is published.
	e.setYAML("hash_key_env: SLUICE_TEST_NO_SUCH_KEY, columns: {public.users.email: hash}", "columns: {public.users.EMAIL: mask, public.nope.x: drop}")
	err, _ = runErr(t, e.cfg)
	mentions(t, err, "public.users.EMAIL matches no column", "did you mean email?", "table public.nope, which is not captured")

	e.setYAML("columns: {public.users.EMAIL: mask, public.nope.x: drop}", "columns: {public.users.id: drop}")
	stop, logs := e.startRun()
	e.exec(`INSERT INTO users VALUES (1, 'x')`)
	select {
	case <-e.finished:
	case <-time.After(30 * time.Second):
		t.Fatalf("sluice went on with a key column dropped:\n%s", logs)
	}
	err = stop()
	mentions(t, err, "public.users.id", "key column", "hash it instead")
	defer startStoreServer(t, e)()
	if n := streamCount(t, e.natsURL(), e.cfg.Stream.Name); n != 0 {
		t.Fatalf("%d events published with a key column dropped", n)
	}
}
