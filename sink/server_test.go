package sink_test

import (
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
)

// An nkey user with read permissions can subscribe to the change subjects
// and nothing else; sluice's own in-process connection needs no login.
func TestServerNkeyReadUser(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	listen := "127.0.0.1:" + strconv.Itoa(natstest.FreePort(t))
	srv, err := sink.StartServer(sink.ServerConfig{
		Name: "t", Listen: listen, StoreDir: filepath.Join(t.TempDir(), "js"), MaxPayload: 1 << 20, Prefix: "cdc",
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

	opt, err := nkeyOption(seed)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 10)
	nc, err := nats.Connect("nats://"+listen, opt, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
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
	_ = nc.Publish("cdc.pg1.s.t.0", []byte("forged"))
	_ = nc.Flush()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("publish as read user: %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read user published to cdc.> without a permissions violation")
	}
	if _, err := nats.Connect("nats://" + listen); err == nil {
		t.Fatal("connected without a login")
	}
	if _, err := nats.Connect("nats://sluice-internal-x:y@" + listen); err == nil {
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
