package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// testHashKey is the privacy hash key of the tests, in the environment
// of the whole test binary (TestMain), so that the tests that read it run
// in parallel.
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

// TestPrivacy: masked, hashed and dropped columns never reach the
// stream in clear, from the log or from a backfill; a hashed key keeps
// each key on one partition, and its table gets no chunk events.
func TestPrivacy(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, db database) {
		e, _ := db.start(t, "users", "vips")
		privacyTest(t, e, db.schema)
	})
}

func privacyTest(t *testing.T, e *env, schema string) {
	e.setYAML("replicas: 1}", "replicas: 1}\n"+strings.ReplaceAll(privacyYAML, "%[1]s", schema))
	e.exec(`CREATE TABLE users (id INT PRIMARY KEY, email TEXT, ssn TEXT, notes TEXT, age INT)`)
	e.exec(`CREATE TABLE vips (email VARCHAR(100) PRIMARY KEY, tier TEXT)`)
	// Rows from before capture reach the stream through the backfill.
	e.exec(`INSERT INTO users VALUES (1, 'ann@example.com', '078-05-1120', 'diary entry', 30)`)
	e.exec(`INSERT INTO vips VALUES ('ann@example.com', 'vip')`)
	e.backfill = []string{schema + ".users", schema + ".vips"}
	stop, logs := e.startRun()
	e.waitBackfills(2, time.Minute, logs)
	e.exec(`INSERT INTO users VALUES (2, 'bob@example.com', '219-09-9999', 'diary entry', NULL)`)
	e.exec(`UPDATE users SET email = 'bo2@example.com', age = 41 WHERE id = 2`)
	e.exec(`INSERT INTO vips VALUES ('bob@example.com', 'gold')`)
	e.exec(`UPDATE vips SET tier = 'platinum' WHERE email = 'bob@example.com'`)
	e.exec(`DELETE FROM vips WHERE email = 'bob@example.com'`)
	e.exec(`DELETE FROM users WHERE id = 1`)

	// The tables' first shapes, 2 backfill rows, chunk events of users (4
	// partitions), 6 changes.
	events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 2+2+4+6, time.Minute)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	assertAnnounced(t, events)
	vipSubjects := map[string]bool{}
	for _, ev := range events {
		for _, s := range secrets {
			if strings.Contains(ev.raw, s) {
				t.Fatalf("clear value %q in the stream: %s", s, ev.raw)
			}
		}
		if ev.Op == "schema" {
			// The shapes consumers see: without the dropped column.
			cols := map[string]string{"users": "id,email,ssn,age", "vips": "email,tier"}[ev.Source.Table]
			key := map[string]string{"users": "id", "vips": "email"}[ev.Source.Table]
			assertFirstShape(t, ev, "cdc."+e.cfg.Source.Name+"."+schema+"."+ev.Source.Table+"._schema", cols, key)
			continue
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
	t.Parallel()
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

// TestPrivacyRename: a column renamed from under its policy stops
// sluice before the first event of the new shape; a restart with a policy
// on both names (the old one only in an earlier shape now) goes on, both
// masked. The SSNs never leave in clear: not in the stream, the log, the
// error, a contract's reasons, or any file of the store.
func TestPrivacyRename(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, db database) {
		e, _ := db.start(t, "users")
		privacyRenameTest(t, e, db.schema)
	})
}

func privacyRenameTest(t *testing.T, e *env, schema string) {
	ssns := []string{"078-05-1120", "219-09-9999", "457-55-5462"}
	e.exec(`CREATE TABLE users (id INT PRIMARY KEY, ssn VARCHAR(20), age INT)`)
	// The contract breaks on every row (a masked value is no integer), so
	// its reasons are logged: they must show the masked value.
	e.setYAML("replicas: 1}", "replicas: 1}\nprivacy: {columns: {"+schema+".users.ssn: mask}}\n"+
		"contracts: {"+schema+".users: {policy: warn, columns: {ssn: {type: integer}}}}")
	stop, logs := e.startRun()
	e.exec(`INSERT INTO users VALUES (1, '` + ssns[0] + `', 30)`)
	// The table's first shape, the event and its contract copy.
	events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 3, time.Minute)
	assertFirstShape(t, events[0], "cdc."+e.cfg.Source.Name+"."+schema+".users._schema", "id,ssn,age", "id")
	e.exec(`ALTER TABLE users RENAME COLUMN ssn TO social`)
	e.exec(`INSERT INTO users VALUES (2, '` + ssns[1] + `', 40)`)
	select {
	case <-e.finished:
	case <-time.After(30 * time.Second):
		t.Fatalf("sluice went on after the column under a policy was renamed:\n%s", logs)
	}
	err := stop()
	mentions(t, err, "privacy.columns."+schema+".users.ssn", "no longer has", ": social (", "privacy.on_missing_column is halt")
	text := err.Error() + logs.String()
	if !strings.Contains(logs.String(), `column ssn is \"***\"`) {
		t.Errorf("the contract's reasons were not logged with the masked value (the probe of the log sees nothing):\n%s", logs)
	}

	// Both names: ssn now only in the registered shape, social in the table.
	e.setYAML(schema+".users.ssn: mask}", schema+".users.ssn: mask, "+schema+".users.social: mask}")
	stop, logs = e.startRun()
	e.exec(`INSERT INTO users VALUES (3, '` + ssns[2] + `', 50)`)
	// 3 before; then the new shape, rows 2 and 3.
	events = readEvents(t, e.natsURL(), e.cfg.Stream.Name, 6, time.Minute)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	text += logs.String()
	masked := map[string]bool{}
	for _, ev := range events {
		if ev.Op == "c" && string(ev.After["social"]) == `"***"` {
			masked[string(ev.Key["id"])] = true
		}
		for _, s := range ssns {
			if strings.Contains(ev.raw, s) {
				t.Fatalf("clear SSN %s in the stream: %s", s, ev.raw)
			}
		}
	}
	if !masked["2"] || !masked["3"] {
		t.Errorf("rows 2 and 3 not published with social masked: %v", events)
	}
	for _, s := range ssns {
		if strings.Contains(text, s) {
			t.Errorf("clear SSN %s in the error or the log:\n%s", s, text)
		}
	}
	// Every file of the store: the events, the dead-letter copies, the
	// checkpoint bucket with its shapes. The probe sees the masked value,
	// so it would see a clear one.
	seen := false
	err = filepath.WalkDir(filepath.Join(e.dir, "nats"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		seen = seen || bytes.Contains(b, []byte(`"social":"***"`))
		for _, s := range ssns {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("clear SSN %s in %s", s, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !seen {
		t.Error("no file of the store holds an event: the probe of the store proves nothing")
	}
}
