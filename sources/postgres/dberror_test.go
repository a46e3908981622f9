package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-cdc/sluice/sources"
)

// canary stands for a value no error may ever show.
const canary = "CANARY-5e1f-never-leaves"

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Decode errors name the type and length, never the value.
func TestDecodeErrorsQuoteNoValue(t *testing.T) {
	for _, c := range []struct {
		oid uint32
		in  string
	}{
		{23, "12" + canary}, {16, canary}, {17, `\x` + canary}, {1082, canary}, {1114, "2024-01-01 " + canary},
		{1007, "{1,2," + canary + "}"}, {1007, "{1}" + canary},
	} {
		dec, err := newDecoder(c.oid, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = dec(nil, []byte(c.in))
		if err == nil || strings.Contains(err.Error(), "CANARY") || !strings.Contains(err.Error(), " bytes)") {
			t.Errorf("decoding %q (oid %d): %v", c.in, c.oid, err)
		}
	}
}

// The reduced error keeps the classification and the original error, and
// loses the server's message.
func TestValueFree(t *testing.T) {
	pgErr := &pgconn.PgError{Severity: "ERROR", Code: "22P02", Message: `invalid input syntax for type integer: "` + canary + `"`}
	err := valueFree(classify(fmt.Errorf("read a chunk of public.t: %w", pgErr)))
	var dbErr *sources.DBError
	var back *pgconn.PgError
	if strings.Contains(err.Error(), "CANARY") || !errors.As(err, &dbErr) || !errors.As(err, &back) || back != pgErr {
		t.Fatalf("valueFree = %q", err)
	}
	if want := "read a chunk of public.t: invalid input for the column's type (SQLSTATE 22P02)"; err.Error() != want {
		t.Errorf("valueFree = %q, want %q", err, want)
	}
	gone := &pgconn.PgError{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"}
	err = valueFree(classify(fmt.Errorf("read: %w", gone)))
	if !errors.Is(err, sources.ErrDisconnected) || strings.Contains(err.Error(), "administrator") {
		t.Errorf("a shutdown: %q, want ErrDisconnected without the message", err)
	}
	for code, want := range map[string]string{"42501": "permission denied", "23999": "integrity constraint violation", "ZZ000": "PostgreSQL error"} {
		if got := dbError(&pgconn.PgError{Code: code}).Desc; got != want {
			t.Errorf("SQLSTATE %s: %q, want %q", code, got, want)
		}
	}
}
