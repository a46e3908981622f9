package mysql

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/sluice-cdc/sluice/sources"
)

func TestAppendValue(t *testing.T) {
	labels := []string{"a", "b", "c"}
	tests := []struct {
		name string
		c    colCodec
		v    any
		want string
	}{
		{"null", colCodec{kind: kindInt}, nil, `null`},
		{"int8", colCodec{kind: kindInt, bits: 8}, int8(-128), `-128`},
		{"unsigned tinyint read as signed", colCodec{kind: kindInt, bits: 8, unsigned: true}, int8(-1), `255`},
		{"unsigned mediumint read as signed", colCodec{kind: kindInt, bits: 24, unsigned: true}, int32(-1), `16777215`},
		{"unsigned int read as signed", colCodec{kind: kindInt, bits: 32, unsigned: true}, int32(-1), `4294967295`},
		{"bigint unsigned max read as signed", colCodec{kind: kindInt, bits: 64, unsigned: true}, int64(-1), `18446744073709551615`},
		{"bigint unsigned max", colCodec{kind: kindInt, bits: 64, unsigned: true}, uint64(18446744073709551615), `18446744073709551615`},
		{"bigint min", colCodec{kind: kindInt, bits: 64}, int64(-9223372036854775808), `-9223372036854775808`},
		{"year", colCodec{kind: kindYear}, 2024, `2024`},
		{"bit", colCodec{kind: kindBit, bits: 64}, int64(682), `682`},
		{"bit(64) all ones", colCodec{kind: kindBit, bits: 64}, int64(-1), `18446744073709551615`},
		{"decimal 65,30", colCodec{kind: kindDecimal}, "12345678901234567890123456789012345.123456789012345678901234567890", `"12345678901234567890123456789012345.123456789012345678901234567890"`},
		{"float", colCodec{kind: kindFloat32}, float32(1.5), `1.5`},
		{"float shortest", colCodec{kind: kindFloat32}, float32(0.1), `0.1`},
		{"double exp", colCodec{kind: kindFloat64}, -2.5e100, `-2.5e+100`},
		{"date", colCodec{kind: kindDate}, "2024-02-29", `"2024-02-29"`},
		{"time negative", colCodec{kind: kindTime}, "-838:59:59", `"-838:59:59"`},
		{"datetime", colCodec{kind: kindDatetime}, "2024-02-29 13:45:06.123456", `"2024-02-29T13:45:06.123456Z"`},
		{"datetime zero", colCodec{kind: kindDatetime}, "0000-00-00 00:00:00", `"0000-00-00 00:00:00"`},
		{"text utf8mb4", colCodec{kind: kindText, charset: "utf8mb4"}, "snow ☃ \"q\"\n", `"snow ☃ \"q\"\n"`},
		{"text latin1", colCodec{kind: kindText, charset: "latin1"}, []byte("caf\xe9 \x80"), `"café €"`},
		{"blob", colCodec{kind: kindBytes}, []byte{0, 0xff, 0x10}, `"AP8Q"`},
		{"binary as string", colCodec{kind: kindBytes}, "abc", `"YWJj"`},
		{"json", colCodec{kind: kindJSON}, []byte(`{"a": [1, 2]}`), `{"a": [1, 2]}`},
		{"json empty document", colCodec{kind: kindJSON}, []byte{}, `null`},
		{"mariadb json text", colCodec{kind: kindJSON}, "[1, 2]", `[1, 2]`},
		{"enum", colCodec{kind: kindEnum, labels: labels}, int64(2), `"b"`},
		{"enum invalid", colCodec{kind: kindEnum, labels: labels}, int64(0), `""`},
		{"set", colCodec{kind: kindSet, labels: labels}, int64(5), `"a,c"`},
		{"set empty", colCodec{kind: kindSet, labels: labels}, int64(0), `""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.c.appendValue(nil, tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("%s is not JSON", got)
			}
		})
	}
}

func TestAppendValueErrors(t *testing.T) {
	for name, c := range map[string]struct {
		c colCodec
		v any
	}{
		"int from string":       {colCodec{name: "x", kind: kindInt}, "12"},
		"float from int":        {colCodec{name: "x", kind: kindFloat64}, int64(1)},
		"unsupported charset":   {colCodec{name: "x", kind: kindText, charset: "ucs2"}, []byte{0xff, 0xfe}},
		"enum from float":       {colCodec{name: "x", kind: kindEnum}, 1.5},
		"datetime from []byte?": {colCodec{name: "x", kind: kindDatetime}, 42},
	} {
		if got, err := c.c.appendValue(nil, c.v); err == nil {
			t.Errorf("%s: got %s, want an error", name, got)
		}
	}
}

func TestParseDSN(t *testing.T) {
	d, err := parseDSN("sluice:p@ss:w0rd@tcp(db.example:3307)/shop?tls=true")
	if err != nil {
		t.Fatal(err)
	}
	if d.user != "sluice" || d.password != "p@ss:w0rd" || d.host != "db.example" || d.port != 3307 || d.db != "shop" {
		t.Errorf("parsed %+v", d)
	}
	if d, err := parseDSN("root@tcp(127.0.0.1)/"); err != nil || d.port != 3306 || d.password != "" {
		t.Errorf("default port: %+v %v", d, err)
	}
	for _, bad := range []string{"shop", "u:p@unix(/tmp/s)/db", "u:p@tcp(h:x)/db", ":p@tcp(h:1)/db"} {
		_, err := parseDSN(bad)
		if err == nil {
			t.Errorf("parseDSN(%q) accepted", bad)
		} else if len(bad) > 6 && strings.Contains(err.Error(), bad) {
			t.Errorf("error repeats the DSN: %v", err)
		}
	}
}

func TestParseLabels(t *testing.T) {
	got := parseLabels(`enum('sad','it''s ok','a,b','back\\slash')`)
	want := []string{"sad", "it's ok", "a,b", `back\slash`}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("label %d = %q, want %q", i, got[i], want[i])
		}
	}
}

// The default server id is documented: pin it.
func TestDefaultServerID(t *testing.T) {
	if a, b := DefaultServerID("my1"), DefaultServerID("my2"); a == b || a <= 1000 || b <= 1000 || a >= 1<<31 {
		t.Errorf("server ids %d, %d", a, b)
	}
	if DefaultServerID("my1") != DefaultServerID("my1") {
		t.Error("not deterministic")
	}
}

func TestPositionRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		flavor string
		text   string
	}{
		{mysql.MariaDBFlavor, "gtid:0-1-57"},
		{mysql.MariaDBFlavor, "gtid:0-1-57,1-2-9"},
		{mysql.MySQLFlavor, "gtid:3e11fa47-71ca-11e1-9e33-c80aa9429562:1-57"},
		{mysql.MySQLFlavor, "file:binlog.000003:1234"},
	} {
		p, err := parsePosition(tt.flavor, sources.Position(tt.text))
		if err != nil {
			t.Fatalf("%s: %v", tt.text, err)
		}
		if p.String() != tt.text {
			t.Errorf("round trip of %s = %s", tt.text, p)
		}
	}
	for _, bad := range []string{"", "0-1-57", "file:nopos", "gtid:zz"} {
		if _, err := parsePosition(mysql.MariaDBFlavor, sources.Position(bad)); err == nil {
			t.Errorf("parsePosition(%q) accepted", bad)
		}
	}
}
