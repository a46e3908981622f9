package mysql

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
)

func TestDSNHosts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []hostPort
		err  string
	}{
		{in: "u:p@tcp(db1)/shop", want: []hostPort{{"db1", 3306}}},
		{in: "u:p@tcp(::1)/shop", want: []hostPort{{"::1", 3306}}},
		{in: "u:p@tcp(db1:3307,db2:3308)/shop", want: []hostPort{{"db1", 3307}, {"db2", 3308}}},
		{in: "u:p@tcp(db1, db2)/shop", want: []hostPort{{"db1", 3306}, {"db2", 3306}}},
		{in: "u:p@tcp([::1]:3307,[fe80::2])/shop", want: []hostPort{{"::1", 3307}, {"fe80::2", 3306}}},
		{in: "u:p@tcp(db1,::1)/shop", err: "ambiguous"},
		{in: "u:p@tcp(db1,)/shop", err: "empty host"},
		{in: "u:p@tcp(db1:3306,db1:3306)/shop", err: "listed twice"},
		{in: "u:p@tcp(db1:x,db2)/shop", err: "not a number"},
		{in: "u:secret@tcp(:3306,db2)/shop", err: "names no host"},
	} {
		d, err := parseDSN(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one with %q", tc.in, err, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: the error repeats the password: %v", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if !slices.Equal(d.hosts, tc.want) || d.host != tc.want[0].host || d.port != tc.want[0].port {
			t.Errorf("%s: hosts %v (in use %s), want %v", tc.in, d.hosts, d.addr(), tc.want)
		}
	}
}

func TestMariaDBMissing(t *testing.T) {
	for _, tc := range []struct {
		state, checkpoint string
		missing           []string
	}{
		{state: "0-1-20", checkpoint: "0-1-20"},
		{state: "0-1-25", checkpoint: "0-1-20"},
		// Promoted replica: the old primary's GTIDs keep server id 1.
		{state: "0-1-20,0-2-31", checkpoint: "0-1-20"},
		{state: "0-1-20,0-2-31", checkpoint: "0-2-30"},
		// The replica stopped at 15 and wrote 16.. itself.
		{state: "0-1-15,0-2-31", checkpoint: "0-1-20", missing: []string{"0-1-20"}},
		{state: "0-1-15", checkpoint: "0-1-20", missing: []string{"0-1-20"}},
		{state: "0-1-20", checkpoint: "0-1-20,1-1-3", missing: []string{"1-1-3"}},
		{state: "", checkpoint: "0-1-1", missing: []string{"0-1-1"}},
	} {
		cp, err := mysql.ParseGTIDSet(mysql.MariaDBFlavor, tc.checkpoint)
		if err != nil {
			t.Fatal(err)
		}
		got, err := mariadbMissing(tc.state, cp)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.missing) {
			t.Errorf("state %s, checkpoint %s: missing %v, want %v", tc.state, tc.checkpoint, got, tc.missing)
		}
	}
}

// TestConnectPrimary: of several hosts, the writable one is used; none
// writable is a disconnect that names each host and why.
func TestConnectPrimary(t *testing.T) {
	ctx := context.Background()
	primary := mysqltest.New(t)
	replica := mysqltest.NewReplica(t, primary)
	down := mysqltest.New(t)
	if err := down.Halt(); err != nil {
		t.Fatal(err)
	}
	d, err := parseConfig(Config{DSN: "root:@tcp(" + down.Addr() + "," + replica.Addr() + "," + primary.Addr() + ")/"})
	if err != nil {
		t.Fatal(err)
	}
	conn, got, err := connectPrimary(ctx, d, hostPort{})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if got.addr() != primary.Addr() {
		t.Errorf("connected to %s, want the writable %s", got.addr(), primary.Addr())
	}

	if err := primary.Halt(); err != nil {
		t.Fatal(err)
	}
	_, _, err = connectPrimary(ctx, d, hostPort{})
	if !errors.Is(err, sources.ErrDisconnected) {
		t.Fatalf("no writable host: %v, want ErrDisconnected", err)
	}
	for _, want := range []string{down.Addr(), primary.Addr(), replica.Addr() + " is read-only", "promote one"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}

	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	conn, got, err = connectPrimary(ctx, d, hostPort{})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if got.addr() != replica.Addr() {
		t.Errorf("connected to %s, want the promoted %s", got.addr(), replica.Addr())
	}
}
