package mysql

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/sluice-cdc/sluice/sources"
)

// canary stands for a value no error may ever show.
const canary = "CANARY-9c2d-never-leaves"

// The reduced error keeps the classification and the original error, and
// loses the server's message.
func TestValueFree(t *testing.T) {
	myErr := &mysql.MyError{Code: mysql.ER_TRUNCATED_WRONG_VALUE, State: "22007", Message: "Truncated incorrect DOUBLE value: '" + canary + "'"}
	err := valueFree(classify(fmt.Errorf("read a chunk of db.t: %w", myErr)))
	var dbErr *sources.DBError
	var back *mysql.MyError
	if strings.Contains(err.Error(), "CANARY") || !errors.As(err, &dbErr) || !errors.As(err, &back) || back != myErr {
		t.Fatalf("valueFree = %q", err)
	}
	if want := "read a chunk of db.t: invalid value for the column's type (MySQL error 1292, SQLSTATE 22007)"; err.Error() != want {
		t.Errorf("valueFree = %q, want %q", err, want)
	}
	gone := &mysql.MyError{Code: mysql.ER_SERVER_SHUTDOWN, State: "08S01", Message: "Server shutdown in progress"}
	err = valueFree(classify(fmt.Errorf("read: %w", gone)))
	if !errors.Is(err, sources.ErrDisconnected) || strings.Contains(err.Error(), "in progress") {
		t.Errorf("a shutdown: %q, want ErrDisconnected without the message", err)
	}
	for code, want := range map[uint16]string{1142: "permission denied", 1143: "permission denied", 3024: "statement timeout", 1969: "statement timeout", 1054: "unknown column", 1366: "invalid value", 9999: "MySQL error"} {
		if got := dbError(&mysql.MyError{Code: code}).Desc; !strings.HasPrefix(got, want) {
			t.Errorf("error %d: %q, want %q", code, got, want)
		}
	}
}

// How a timeout is said to each flavor: a number of ours, never zero.
func TestTimeoutSQL(t *testing.T) {
	tbl := &tableSchema{db: "d", name: "t", columns: []column{{name: "id", dataType: "int"}}, key: []string{"id"}}
	for _, c := range []struct {
		flavor  string
		timeout time.Duration
		prefix  string
	}{
		{mysql.MariaDBFlavor, 0, "SELECT `id`"},
		{mysql.MySQLFlavor, 0, "SELECT `id`"},
		{mysql.MariaDBFlavor, 1500 * time.Millisecond, "SET STATEMENT max_statement_time=1.500000 FOR SELECT `id`"},
		{mysql.MariaDBFlavor, time.Nanosecond, "SET STATEMENT max_statement_time=0.000001 FOR SELECT `id`"},
		{mysql.MySQLFlavor, 1500 * time.Millisecond, "SELECT /*+ MAX_EXECUTION_TIME(1500) */ `id`"},
		{mysql.MySQLFlavor, time.Microsecond, "SELECT /*+ MAX_EXECUTION_TIME(1) */ `id`"},
		{mysql.MySQLFlavor, 1000 * time.Hour, "SELECT /*+ MAX_EXECUTION_TIME(3600000000) */ `id`"},
	} {
		sql, _, err := chunkSQL(tbl, sources.ChunkQuery{Table: "d.t", Limit: 5, Timeout: c.timeout}, c.flavor)
		if err != nil || !strings.HasPrefix(sql, c.prefix) || !strings.HasSuffix(sql, " LIMIT 5") {
			t.Errorf("%s, %v: %q, %v; want it to start with %q", c.flavor, c.timeout, sql, err, c.prefix)
		}
	}
}

// Values MySQL would convert leniently are checked before they are bound.
func TestFilterParam(t *testing.T) {
	tbl := &tableSchema{db: "d", name: "t"}
	for _, c := range []struct {
		col     column
		in      string
		ph      string
		arg     any
		refused bool
	}{
		{column{name: "i", dataType: "int"}, "-5", "?", int64(-5), false},
		{column{name: "u", dataType: "bigint", unsigned: true}, "18446744073709551615", "?", uint64(18446744073709551615), false},
		{column{name: "i", dataType: "int"}, "1e3", "", nil, true},
		{column{name: "i", dataType: "int"}, " 1", "", nil, true},
		{column{name: "f", dataType: "double"}, "NaN", "", nil, true},
		{column{name: "f", dataType: "float"}, "-2.5e3", "?", -2500.0, false},
		{column{name: "d", dataType: "decimal"}, "+0012.3400", "CAST(? AS DECIMAL(4,2))", "0012.3400", false},
		{column{name: "d", dataType: "decimal"}, "0", "CAST(? AS DECIMAL(1,0))", "0", false},
		{column{name: "d", dataType: "decimal"}, "1." + strings.Repeat("1", 31), "", nil, true},
		{column{name: "d", dataType: "decimal"}, "1e5", "", nil, true},
		{column{name: "dt", dataType: "date"}, "2024-02-29", "?", "2024-02-29", false},
		{column{name: "dt", dataType: "date"}, "0000-00-00", "?", "0000-00-00", false},
		{column{name: "dt", dataType: "date"}, "2023-02-29", "", nil, true},
		{column{name: "dt", dataType: "date"}, "2024-01-01 junk", "", nil, true},
		{column{name: "ts", dataType: "timestamp"}, "2024-01-01T10:00:00.5Z", "?", "2024-01-01 10:00:00.5", false},
		{column{name: "ts", dataType: "datetime"}, "2024-01-01", "?", "2024-01-01", false},
		{column{name: "ts", dataType: "datetime"}, "2024-01-01 24:00:00", "", nil, true},
		{column{name: "tm", dataType: "time"}, "-838:59:59.000001", "?", "-838:59:59.000001", false},
		{column{name: "tm", dataType: "time"}, "839:00:00", "", nil, true},
		{column{name: "s", dataType: "varchar"}, "' OR 1=1 --", "?", "' OR 1=1 --", false},
	} {
		ph, arg, err := filterParam(tbl, c.col, c.in)
		if c.refused {
			if !errors.Is(err, sources.ErrBadFilter) || strings.Contains(err.Error(), c.in) || !strings.Contains(err.Error(), c.col.name) {
				t.Errorf("%s %q: %v, want ErrBadFilter naming the column, not the value", c.col.dataType, c.in, err)
			}
			continue
		}
		if err != nil || ph != c.ph || arg != c.arg {
			t.Errorf("%s %q: %q, %#v, %v; want %q, %#v", c.col.dataType, c.in, ph, arg, err, c.ph, c.arg)
		}
	}
}
