package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
)

const mysqlTypesTable = `CREATE TABLE all_types (
	id INT PRIMARY KEY,
	ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mu MEDIUMINT UNSIGNED,
	i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
	d DECIMAL(65,30), f FLOAT, dbl DOUBLE,
	c CHAR(5), vc VARCHAR(20), tx TEXT, l1 VARCHAR(20) CHARACTER SET latin1,
	bl BLOB, bn BINARY(3), vb VARBINARY(10),
	dt DATE, tm TIME(3), dtm DATETIME(6), ts TIMESTAMP(3) NULL, yr YEAR,
	j JSON, e ENUM('sad','ok','happy'), st SET('a','b','c'), bt BIT(10),
	nul VARCHAR(5))`

const mysqlTypesRow = `INSERT INTO all_types VALUES (1,
	-128, 255, -32768, 16777215,
	-2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
	'12345678901234567890123456789012345.123456789012345678901234567890', 1.5, -2.5e100,
	'ab', 'varchar "q"', 'text\nline', 'café',
	X'00FF10', X'616263', X'DEAD',
	'2024-02-29', '13:45:06.789', '2024-02-29 13:45:06.123456', '2024-02-29 13:45:06.500', 2024,
	'{"a": [1, 2]}', 'happy', 'a,c', b'1010101010',
	NULL)`

var mysqlTypesWant = map[string]string{
	"id": `1`,
	"ti": `-128`, "tu": `255`, "si": `-32768`, "mu": `16777215`,
	"i": `-2147483648`, "iu": `4294967295`, "bi": `-9223372036854775808`, "bu": `18446744073709551615`,
	"d":   `"12345678901234567890123456789012345.123456789012345678901234567890"`,
	"f":   `1.5`,
	"dbl": `-2.5e+100`,
	"c":   `"ab"`, "vc": `"varchar \"q\""`, "tx": `"text\nline"`, "l1": `"café"`,
	"bl": `"AP8Q"`, "bn": `"YWJj"`, "vb": `"3q0="`,
	"dt": `"2024-02-29"`, "tm": `"13:45:06.789"`, "dtm": `"2024-02-29T13:45:06.123456Z"`, "ts": `"2024-02-29T13:45:06.500Z"`, "yr": `2024`,
	"j": `{"a": [1, 2]}`, "e": `"happy"`, "st": `"a,c"`, "bt": `682`,
	"nul": `null`,
}

// assertSchemaEvent checks a schema-change event: its subject, and the
// old and new shapes' versions and columns.
func assertSchemaEvent(t *testing.T, ev event, subject string, oldV int, oldCols string, newV int, newCols string) {
	t.Helper()
	var body struct {
		Schema struct {
			Old, New struct {
				Version int
				Columns []struct{ Name string }
			}
			JSONSchema struct {
				Properties map[string]any `json:"properties"`
			} `json:"json_schema"`
		} `json:"schema"`
	}
	if err := json.Unmarshal([]byte(ev.raw), &body); err != nil {
		t.Fatal(err)
	}
	names := func(cols []struct{ Name string }) string {
		var n []string
		for _, c := range cols {
			n = append(n, c.Name)
		}
		return strings.Join(n, ",")
	}
	s := body.Schema
	if ev.subject != subject || s.Old.Version != oldV || s.New.Version != newV || names(s.Old.Columns) != oldCols ||
		names(s.New.Columns) != newCols || len(s.JSONSchema.Properties) != strings.Count(newCols, ",")+1 {
		t.Errorf("schema event on %s: %s; want %s, v%d [%s] → v%d [%s]", ev.subject, ev.raw, subject, oldV, oldCols, newV, newCols)
	}
}

// An idle server sends heartbeats, so sluice does not take the silence for
// a dead connection: the read timeout is three heartbeats, and idling for
// many of them must not cause a single reconnect.
func TestMySQLIdleHeartbeats(t *testing.T) {
	t.Parallel()
	my := mysqltest.New(t)
	e := newMySQLEnv(t, my, "shop.t")
	e.setYAML("kind: mysql,", "kind: mysql, heartbeat: 200ms,")
	e.exec(`CREATE TABLE t (id INT PRIMARY KEY)`)
	stop, logs := e.startRun()
	// The idling under test, not a wait: 15 heartbeats, 5 read timeouts' worth.
	time.Sleep(3 * time.Second)
	e.exec(`INSERT INTO t VALUES (1)`)
	readRows(t, e.natsURL(), e.cfg.Stream.Name, 1, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "reconnecting") {
		t.Errorf("an idle server was taken for a dead connection:\n%s", logs)
	}
}

// mysqlCrashDB runs the crash test's transactions on MariaDB.
type mysqlCrashDB struct{ conn *client.Conn }

func (d mysqlCrashDB) tx(stmts []string) error {
	if err := d.conn.Begin(); err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := d.conn.Execute(s); err != nil {
			_ = d.conn.Rollback()
			return err
		}
	}
	return d.conn.Commit()
}

func (d mysqlCrashDB) state() (map[int]int, error) {
	r, err := d.conn.Execute("SELECT id, v FROM items")
	if err != nil {
		return nil, err
	}
	state := map[int]int{}
	for i := range r.RowNumber() {
		id, _ := r.GetInt(i, 0)
		v, _ := r.GetInt(i, 1)
		state[int(id)] = int(v)
	}
	return state, nil
}

// The same crash test with positions kept as binlog file and offset, as on
// a MySQL server without GTIDs.
func TestMySQLCrashRecoveryFilePositions(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("crash test builds and kills the binary: skipped in -short")
	}
	my := mysqltest.New(t)
	e := newMySQLEnv(t, my, "shop.items")
	e.setYAML("kind: mysql,", "kind: mysql, positions: file,")
	e.exec(`CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL, note TEXT)`)
	crashTest(t, e, mysqlCrashDB{mysqlConn(t, my)})
	ckpt := readCheckpointPosition(t, e)
	if !strings.HasPrefix(ckpt, "file:") {
		t.Errorf("checkpoint position %q is not a file position", ckpt)
	}
}

func TestMySQLPrerequisites(t *testing.T) {
	t.Parallel()
	my := mysqltest.New(t, mysqltest.Options{Settings: map[string]string{"binlog_format": "STATEMENT", "binlog_row_image": "MINIMAL"}})
	e := newMySQLEnv(t, my, "shop.ok", "shop.nokey")
	e.exec(`CREATE TABLE ok (id INT PRIMARY KEY)`)
	e.exec(`CREATE TABLE nokey (a INT)`)
	err, _ := runErr(t, e.cfg)
	if !errors.Is(err, sources.ErrPrerequisite) {
		t.Errorf("error is not ErrPrerequisite: %v", err)
	}
	mentions(t, err, "binlog_format is STATEMENT", "binlog_format = ROW", "binlog_row_image is MINIMAL", "binlog_row_image = FULL")

	// With the binlog right, the table without a key is named with its fix.
	my2 := mysqltest.New(t)
	e2 := newMySQLEnv(t, my2, "shop.ok", "shop.nokey")
	e2.exec(`CREATE TABLE ok (id INT PRIMARY KEY)`)
	e2.exec(`CREATE TABLE nokey (a INT)`)
	err, _ = runErr(t, e2.cfg)
	if !errors.Is(err, sources.ErrNoPrimaryKey) {
		t.Errorf("error is not ErrNoPrimaryKey: %v", err)
	}
	mentions(t, err, "shop.nokey", "ADD PRIMARY KEY", "source.keys")
}
