package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// An update that leaves a TOASTed column alone must not publish it as null:
// under the default replica identity it is listed as unchanged; under FULL
// its value is taken from the old row. A table without a primary key is
// captured when it has REPLICA IDENTITY FULL and its key is configured.
func TestUnchangedToastAndReplicaIdentityFull(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.docs", "public.docs_full", "public.nokey")
	e.cfg.Source.Keys = map[string][]string{"public.nokey": {"code"}}
	e.exec(`CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
		CREATE TABLE docs_full (id int PRIMARY KEY, title text, body text);
		ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
		ALTER TABLE docs_full ALTER COLUMN body SET STORAGE EXTERNAL;
		ALTER TABLE docs_full REPLICA IDENTITY FULL;
		CREATE TABLE nokey (code text, qty int);
		ALTER TABLE nokey REPLICA IDENTITY FULL`)
	stop, _ := e.startRun()

	// 20 kB, stored out of line.
	e.exec(`INSERT INTO docs SELECT 1, 'a', string_agg(md5(i::text), '') FROM generate_series(1, 625) i;
		INSERT INTO docs_full SELECT * FROM docs`)
	e.exec(`UPDATE docs SET title = 'b'; UPDATE docs_full SET title = 'b'`)
	e.exec(`INSERT INTO nokey VALUES ('x', 1); UPDATE nokey SET qty = 2; DELETE FROM nokey`)

	events := readRows(t, e.natsURL(), e.cfg.Stream.Name, 7, 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var body string
	if err := json.Unmarshal(events[0].After["body"], &body); err != nil || len(body) != 20000 {
		t.Fatalf("inserted body has %d chars (%v), want 20000", len(body), err)
	}
	byTable := map[string][]event{}
	for _, ev := range events {
		byTable[ev.Source.Table] = append(byTable[ev.Source.Table], ev)
	}

	upd := byTable["docs"][1]
	if upd.Op != "u" || string(upd.After["title"]) != `"b"` {
		t.Fatalf("docs update: %s", upd.raw)
	}
	if v, ok := upd.After["body"]; ok {
		t.Errorf("unchanged TOASTed body published as %.40s…; want it left out", v)
	}
	if len(upd.Unchanged) != 1 || upd.Unchanged[0] != "body" {
		t.Errorf(`want "unchanged":["body"], got %v in %s`, upd.Unchanged, upd.raw)
	}

	full := byTable["docs_full"][1]
	if string(full.After["body"]) != string(events[0].After["body"]) || full.Unchanged != nil {
		t.Errorf("REPLICA IDENTITY FULL update must carry the body from the old row: unchanged=%v body=%.40s", full.Unchanged, full.After["body"])
	}
	if string(full.Before["title"]) != `"a"` {
		t.Errorf("REPLICA IDENTITY FULL update before: %s", full.raw)
	}

	nk := byTable["nokey"]
	if len(nk) != 3 || nk[0].Op != "c" || nk[1].Op != "u" || nk[2].Op != "d" {
		t.Fatalf("nokey events: %v", nk)
	}
	if string(nk[1].Key["code"]) != `"x"` || string(nk[1].Before["qty"]) != `1` || string(nk[1].After["qty"]) != `2` {
		t.Errorf("nokey update: %s", nk[1].raw)
	}
	if string(nk[2].Before["qty"]) != `2` {
		t.Errorf("nokey delete carries the full old row: %s", nk[2].raw)
	}
}
