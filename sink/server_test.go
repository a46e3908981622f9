package sink_test

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
)

// An nkey user with read permissions can subscribe to the change subjects,
// but what it publishes there reaches nobody; sluice's own in-process
// connection needs no login, and there is no anonymous access once logins
// are configured.
func TestServerNkeyReadUser(t *testing.T) {
	natstest.SkipShort(t)
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	listen := "127.0.0.1:" + strconv.Itoa(natstest.FreePort(t))
	srv, err := sink.StartServer(sink.ServerConfig{
		Name: "t", Listen: listen, StoreDir: filepath.Join(t.TempDir(), "js"), MaxPayload: 1 << 20,
		Prefix: "cdc", Source: "pg1", Stream: "CDC_PG1",
		Users: []sink.User{{Nkey: pub, Permissions: sink.PermRead}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	internal, err := srv.Connect("sluice")
	if err != nil {
		t.Fatalf("in-process connection: %v", err)
	}
	defer internal.Close()
	spy, err := internal.SubscribeSync("cdc.>")
	if err != nil {
		t.Fatal(err)
	}
	_ = internal.Flush()

	opt, err := nkeyOption(seed)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+listen, opt)
	if err != nil {
		t.Fatalf("nkey login: %v", err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("cdc.>")
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	if err := internal.Publish("cdc.pg1.s.t.0", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("read user got nothing on cdc.>: %v", err)
	}
	if _, err := spy.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("sluice did not see its own publish: %v", err)
	}
	// The reader's publish stays in its own account: sluice's account never
	// sees it (the canary: sluice's own publish above arrived).
	_ = nc.Publish("cdc.pg1.s.t.0", []byte("forged"))
	_ = nc.Flush()
	_ = internal.Publish("cdc.pg1.s.t.0", []byte("after"))
	if m, err := spy.NextMsg(5 * time.Second); err != nil || string(m.Data) != "after" {
		t.Fatalf("sluice's account saw %v (%v), want only its own \"after\"", m, err)
	}
	if nc, err := nats.Connect("nats://" + listen); err == nil {
		nc.Close()
		t.Fatal("connected without a login although logins are configured")
	}
	if nc, err := nats.Connect("nats://sluice-events-x:y@" + listen); err == nil {
		nc.Close()
		t.Fatal("connected over TCP with a made-up internal login")
	}
}

func nkeyOption(seed []byte) (nats.Option, error) {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	return nats.Nkey(pub, kp.Sign), nil
}
