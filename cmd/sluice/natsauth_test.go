package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// The embedded server's client port takes logins and TLS. A read-only
// consumer can read cdc.> (live and from the stream) but cannot publish a
// change, purge or delete the stream; no login, a wrong one, or plain TCP
// get nothing.
func TestNATSReadOnlyConsumer(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int)`)
	cert, key := writeCert(t, e.dir)
	e.setYAML("store_dir:", `users: [{user: admin, password: adm-pw, permissions: admin}, {user: reader, password: rd-pw, permissions: read},
    {user: operator, password: op-pw, permissions: backfill}],
  tls: {cert: "`+cert+`", key: "`+key+`"}, store_dir:`)
	url := "tls://" + e.cfg.NATS.Listen
	reader := natsClient{URL: url, User: "reader", Password: "rd-pw", CA: cert}
	e.client = reader
	stop, logs := e.startRun()
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	var asyncErrs errList
	nc, err := nats.Connect(url, nats.UserInfo("reader", "rd-pw"), nats.RootCAs(cert), nats.ErrorHandler(asyncErrs.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// Live: a core subscription to cdc.> sees the table's first shape,
	// then the change.
	sub, err := nc.SubscribeSync("cdc.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e.exec(`INSERT INTO items VALUES (1, 10)`)
	var subjects []string
	for range 2 {
		msg, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("the read-only user got no live event: %v; async errors: %v", err, asyncErrs.all())
		}
		subjects = append(subjects, msg.Subject)
	}
	if subjects[0] != "cdc.pg1.public.items._schema" || !strings.HasPrefix(subjects[1], "cdc.pg1.public.items.") || subjects[1] == subjects[0] {
		t.Fatalf("events on %v, want the _schema subject, then a partition of items", subjects)
	}
	// Stored: sluice tail with the reader's login reads the stream.
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tail(ctx, &out, reader, "cdc.>", true, 2); err != nil {
		t.Fatalf("tail as the read-only user: %v", err)
	}
	if !strings.HasPrefix(out.String(), `{"op":"schema",`) || !strings.Contains(out.String(), `"id":1`) {
		t.Fatalf("tail printed %q", out.String())
	}

	// Denied: publishing a change, purging and deleting the stream.
	if err := nc.Publish("cdc.pg1.public.items.0", []byte(`{"op":"d"}`)); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer rcancel()
	if err := js.DeleteStream(rctx, e.cfg.Stream.Name); err == nil {
		t.Fatal("the read-only user deleted the stream")
	}
	rctx2, rcancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer rcancel2()
	if s, err := js.Stream(rctx2, e.cfg.Stream.Name); err != nil {
		t.Fatalf("stream info as the read-only user: %v", err)
	} else if err := s.Purge(rctx2); err == nil {
		t.Fatal("the read-only user purged the stream")
	}
	// The stream is intact: two events, as published by sluice; the
	// reader's publish went nowhere (its account imports no way in).
	admin := natsClient{URL: url, User: "admin", Password: "adm-pw", CA: cert}
	anc, err := admin.connect("admin")
	if err != nil {
		t.Fatal(err)
	}
	defer anc.Close()
	ajs, _ := admin.jetStream(anc)
	s, err := ajs.Stream(context.Background(), e.cfg.Stream.Name)
	if err != nil {
		t.Fatalf("stream gone: %v", err)
	}
	if n := s.CachedInfo().State.Msgs; n != 2 {
		t.Fatalf("stream holds %d messages, want sluice's 2", n)
	}

	// Control subjects: a read login is told which login it needs; a
	// backfill login may backfill.
	var bout strings.Builder
	err = requestBackfill(context.Background(), &bout, e.cfg, reader, []string{"public.items"}, nil, false)
	mentions(t, err, "backfill or admin", "nats.users")
	operator := natsClient{URL: url, User: "operator", Password: "op-pw", CA: cert}
	if err := requestBackfill(context.Background(), &bout, e.cfg, operator, []string{"public.items"}, nil, true); err != nil {
		t.Fatalf("sluice backfill as the backfill login: %v", err)
	}

	// Refused: no login, a wrong password, plain TCP.
	for name, c := range map[string]natsClient{
		"no login":       {URL: url, CA: cert},
		"wrong password": {URL: url, User: "reader", Password: "nope", CA: cert},
		"no TLS":         {URL: "nats://" + e.cfg.NATS.Listen, User: "reader", Password: "rd-pw"},
	} {
		if nc, err := c.connect("x"); err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
		} else if strings.Contains(err.Error(), "rd-pw") || strings.Contains(err.Error(), "nope") {
			t.Errorf("%s: the error shows the password: %v", name, err)
		}
	}
	if strings.Contains(logs.String(), "rd-pw") || strings.Contains(logs.String(), "adm-pw") {
		t.Error("a NATS password appears in sluice's log")
	}
}

type errList struct {
	mu   sync.Mutex
	errs []string
}

func (l *errList) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !errors.Is(err, nats.ErrSlowConsumer) {
		l.errs = append(l.errs, err.Error())
	}
}

func (l *errList) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}
