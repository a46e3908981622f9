package sink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sink/natstest"
)

const (
	secStream = "CDC_PG1"
	secBucket = "sluice_checkpoints"
	secKVStrm = "KV_" + secBucket
)

// secEnv is an embedded server laid out as sluice run lays it out: the
// event stream of source pg1 in the events account, the checkpoint bucket
// and a control responder in the state account.
type secEnv struct {
	t      *testing.T
	cfg    sink.ServerConfig
	srv    *sink.Server
	url    string
	events *nats.Conn // sluice's publisher connection
	state  *nats.Conn // sluice's state connection
	stream jetstream.Stream
	kv     jetstream.KeyValue
	// requests counts control requests that reached sluice, by subject.
	requests map[string]*atomic.Int64
}

func newSecEnv(t *testing.T, edit func(*sink.ServerConfig)) *secEnv {
	t.Helper()
	natstest.SkipShort(t)
	cfg := sink.ServerConfig{
		Name: "sec", Listen: "127.0.0.1:" + strconv.Itoa(natstest.FreePort(t)),
		StoreDir: filepath.Join(t.TempDir(), "js"), MaxPayload: 1 << 20,
		Prefix: "cdc", Source: "pg1", Stream: secStream,
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := sink.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	e := &secEnv{t: t, cfg: cfg, srv: srv, url: "nats://" + cfg.Listen, requests: map[string]*atomic.Int64{}}
	if e.events, err = srv.Connect("sluice-events"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.events.Close)
	if e.state, err = srv.ConnectControl("sluice-state"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.state.Close)
	ctx := context.Background()
	ejs, _ := jetstream.New(e.events)
	if e.stream, err = sink.EnsureStream(ctx, ejs, sink.StreamConfig{Name: secStream, Prefix: "cdc", Source: "pg1", Partitions: 8, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	e.publish("cdc.pg1.public.orders.7", `{"op":"c","after":{"id":7}}`)
	sjs, _ := jetstream.New(e.state)
	if e.kv, err = sjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: secBucket}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv.PutString(ctx, "pg1", "lsn-1"); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"_SLUICE.pg1.backfill", "_SLUICE.pg2.backfill"} {
		n := &atomic.Int64{}
		e.requests[subj] = n
		if _, err := e.state.Subscribe(subj, func(m *nats.Msg) { n.Add(1); _ = m.Respond([]byte("ok")) }); err != nil {
			t.Fatal(err)
		}
	}
	_ = e.state.Flush()
	return e
}

// publish is sluice's own JetStream publish.
func (e *secEnv) publish(subject, data string) {
	e.t.Helper()
	ejs, _ := jetstream.New(e.events)
	if _, err := ejs.Publish(context.Background(), subject, []byte(data)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *secEnv) msgs() uint64 {
	e.t.Helper()
	info, err := e.stream.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

func (e *secEnv) checkpoint() string {
	e.t.Helper()
	v, err := e.kv.Get(context.Background(), "pg1")
	if err != nil {
		e.t.Fatal(err)
	}
	return string(v.Value())
}

// bucketMsgs counts the messages in the bucket's stream, whatever their
// subject.
func (e *secEnv) bucketMsgs() uint64 {
	e.t.Helper()
	st, err := e.kv.Status(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return st.Values()
}

func (e *secEnv) connect(opts ...nats.Option) *nats.Conn {
	e.t.Helper()
	nc, err := nats.Connect(e.url, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// admin connects with the local admin login the server wrote.
func (e *secEnv) admin() *nats.Conn {
	e.t.Helper()
	u, err := sink.ReadLocalAdmin(e.srv.LocalAdminFile())
	if err != nil {
		e.t.Fatal(err)
	}
	return e.connect(nats.UserInfo(u.User, u.Password))
}

// apiErr sends a JetStream API request and returns the error: no
// responders, a timeout, or the API's own error.
func apiErr(nc *nats.Conn, subject string, body any) error {
	var data []byte
	if body != nil {
		data, _ = json.Marshal(body)
	}
	m, err := nc.Request(subject, data, 2*time.Second)
	if err != nil {
		return err
	}
	var rep struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if json.Unmarshal(m.Data, &rep) == nil && rep.Error != nil {
		return fmt.Errorf("api error %d: %s", rep.Error.Code, rep.Error.Description)
	}
	return nil
}

// With no logins configured, an anonymous client on loopback reads the
// events, live and through a pull consumer, and can change nothing: no
// event, stream, bucket or control request of sluice's.
func TestAnonymousIsReadOnly(t *testing.T) {
	e := newSecEnv(t, nil)
	anon := e.connect()
	admin := e.admin()
	ctx := context.Background()

	// Reads: live and stored.
	live, err := anon.SubscribeSync("cdc.pg1.>")
	if err != nil {
		t.Fatal(err)
	}
	_ = anon.Flush()
	e.publish("cdc.pg1.public.orders.3", `{"op":"u"}`)
	if m, err := live.NextMsg(5 * time.Second); err != nil || m.Subject != "cdc.pg1.public.orders.3" {
		t.Fatalf("anonymous live read: %v %v", m, err)
	}
	ajs, _ := jetstream.New(anon)
	st, err := ajs.Stream(ctx, secStream)
	if err != nil {
		t.Fatalf("anonymous stream info: %v", err)
	}
	c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("anonymous pull consumer: %v", err)
	}
	batch, err := c.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got int
	for m := range batch.Messages() {
		got++
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if got != 2 {
		t.Fatalf("anonymous fetch got %d messages, want 2 (%v)", got, batch.Error())
	}

	// Publishing an event: nothing lands (canary: sluice's own lands).
	before := e.msgs()
	_ = anon.Publish("cdc.pg1.public.orders.7", []byte(`{"op":"d","before":{"id":7}}`))
	pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer pcancel()
	if _, err := ajs.Publish(pctx, "cdc.pg1.public.orders.7", []byte(`{"op":"d"}`)); err == nil {
		t.Error("an anonymous JetStream publish was acknowledged")
	}
	_ = anon.Flush()
	if n := e.msgs(); n != before {
		t.Fatalf("stream went from %d to %d messages after an anonymous publish", before, n)
	}
	e.publish("cdc.pg1.public.orders.7", `{"op":"u"}`)
	if n := e.msgs(); n != before+1 {
		t.Fatalf("canary: sluice's publish did not land (%d → %d)", before, n)
	}

	// Stream and bucket changes, under either API prefix.
	for _, subj := range []string{
		"$JS.API.STREAM.PURGE." + secStream, "$JS.API.STREAM.DELETE." + secStream,
		sink.EventsAPIPrefix + ".STREAM.PURGE." + secStream, sink.EventsAPIPrefix + ".STREAM.DELETE." + secStream,
		"$JS.API.STREAM.PURGE." + secKVStrm, "$JS.API.STREAM.DELETE." + secKVStrm,
		"$JS.API.STREAM.UPDATE." + secStream, "$JS.API.STREAM.CREATE.EVIL",
	} {
		if err := apiErr(anon, subj, nil); err == nil {
			t.Errorf("anonymous %s succeeded", subj)
		}
	}
	_ = anon.Publish("$KV."+secBucket+".pg1", []byte("forged"))
	_ = anon.Flush()
	if n, v := e.msgs(), e.checkpoint(); n != before+1 || v != "lsn-1" {
		t.Fatalf("after the anonymous attempts: %d messages, checkpoint %q", n, v)
	}

	// Control requests.
	if _, err := anon.Request("_SLUICE.pg1.backfill", []byte(`{"tables":["public.orders"]}`), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("anonymous control request: %v, want no responders", err)
	}
	if n := e.requests["_SLUICE.pg1.backfill"].Load(); n != 0 {
		t.Fatalf("%d anonymous control requests reached sluice", n)
	}

	// Canaries: the admin can do each of these.
	if _, err := admin.Request("_SLUICE.pg1.backfill", []byte(`{}`), 2*time.Second); err != nil {
		t.Fatalf("canary: admin control request: %v", err)
	}
	if err := apiErr(admin, "$JS.API.STREAM.PURGE."+secKVStrm, nil); err != nil {
		t.Fatalf("canary: admin bucket purge: %v", err)
	}
	if err := apiErr(admin, sink.EventsAPIPrefix+".STREAM.PURGE."+secStream, nil); err != nil {
		t.Fatalf("canary: admin stream purge: %v", err)
	}
	if n := e.msgs(); n != 0 {
		t.Fatalf("canary: the admin's purge left %d messages", n)
	}
}

// A client port off loopback without logins does not start; with logins
// it does.
func TestNonLoopbackNeedsLogins(t *testing.T) {
	cfg := sink.ServerConfig{Name: "open", Listen: "0.0.0.0:" + strconv.Itoa(natstest.FreePort(t)), StoreDir: filepath.Join(t.TempDir(), "js"),
		Prefix: "cdc", Source: "pg1", Stream: secStream}
	problems := sink.CheckExposure(cfg)
	if len(problems) != 1 || !strings.Contains(problems[0], "nats.users") || !strings.Contains(problems[0], "nats.tls.verify_clients") {
		t.Fatalf("CheckExposure = %q", problems)
	}
	if srv, err := sink.StartServer(cfg); err == nil {
		srv.Shutdown()
		t.Fatal("started on 0.0.0.0 without logins")
	} else if !strings.Contains(err.Error(), "nats.users") {
		t.Fatalf("error %q does not name nats.users", err)
	}
	cfg.Users = []sink.User{{User: "r", Password: "pw", Permissions: sink.PermRead}}
	if p := sink.CheckExposure(cfg); len(p) != 0 {
		t.Fatalf("CheckExposure with a login = %q", p)
	}
	natstest.SkipShort(t)
	srv, err := sink.StartServer(cfg)
	if err != nil {
		t.Fatalf("canary: with a login: %v", err)
	}
	defer srv.Shutdown()
	if nc, err := nats.Connect("nats://127.0.0.1:" + strings.Split(cfg.Listen, ":")[1]); err == nil {
		nc.Close()
		t.Fatal("anonymous client connected to a non-loopback port")
	}
}

// The local admin login is a 0600 file replaced at every start; the old
// login stops working.
func TestLocalAdminFile(t *testing.T) {
	natstest.SkipShort(t)
	dir := t.TempDir()
	cfg := sink.ServerConfig{Name: "la", Listen: "127.0.0.1:" + strconv.Itoa(natstest.FreePort(t)), StoreDir: filepath.Join(dir, "js")}
	var logins []sink.User
	for range 2 {
		srv, err := sink.StartServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(cfg.StoreDir, "admin.creds")
		if srv.LocalAdminFile() != path {
			t.Fatalf("admin file at %s, want %s", srv.LocalAdminFile(), path)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("admin file: %v %v", fi, err)
		}
		u, err := sink.ReadLocalAdmin(path)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(u.User, u.Password))
		if err != nil {
			t.Fatalf("local admin over TCP: %v", err)
		}
		js, _ := jetstream.New(nc)
		if _, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "b"}); err != nil {
			t.Fatalf("local admin creates a bucket: %v", err)
		}
		nc.Close()
		for _, old := range logins {
			if nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(old.User, old.Password)); err == nil {
				nc.Close()
				t.Fatal("the previous start's admin login still works")
			}
		}
		logins = append(logins, u)
		srv.Shutdown()
	}
	if logins[0] == logins[1] {
		t.Fatal("the admin login did not change between starts")
	}
}

// A read login's push consumer delivers into the events account only, so
// pointing it at the checkpoint bucket, a control subject, the stream
// itself or the JetStream API does nothing; the same attack on a stream in
// the state account (where the bucket and control subjects live) works,
// which is why the event stream has an account of its own.
func TestReadLoginPushConsumerIsHarmless(t *testing.T) {
	e := newSecEnv(t, func(c *sink.ServerConfig) {
		c.Users = []sink.User{{User: "reader", Password: "rd-pw", Permissions: sink.PermRead}}
	})
	rd := e.connect(nats.UserInfo("reader", "rd-pw"))
	admin := e.admin()
	for range 4 {
		e.publish("cdc.pg1.public.orders.1", `{"op":"c"}`)
	}
	total := int(e.msgs())
	// The most favourable case for the attacker: someone holds a literal
	// subscription on each target subject (a push consumer delivers only
	// while its deliver subject has exact interest).
	for _, subj := range []string{"$KV." + secBucket + ".pg1", "$JS.API.STREAM.PURGE." + secStream} {
		if _, err := admin.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
	}
	_ = admin.Flush()
	if _, err := e.events.SubscribeSync("$JS.API.STREAM.PURGE." + secStream); err != nil {
		t.Fatal(err)
	}
	canary, err := e.events.SubscribeSync("canary.deliveries")
	if err != nil {
		t.Fatal(err)
	}
	_ = e.events.Flush()

	create := func(name, deliver string) error {
		return apiErr(rd, "$JS.API.CONSUMER.CREATE."+secStream+"."+name, map[string]any{
			"stream_name": secStream,
			"config":      map[string]any{"name": name, "deliver_subject": deliver, "ack_policy": "none"},
		})
	}
	if err := create("cycle", "cdc.pg1.public.orders.9"); err == nil {
		t.Error("a push consumer delivering into the stream's own subjects was created")
	}
	targets := map[string]string{
		"kv":      "$KV." + secBucket + ".pg1",
		"control": "_SLUICE.pg1.backfill",
		"purge":   "$JS.API.STREAM.PURGE." + secStream,
	}
	for name, deliver := range targets {
		if err := create(name, deliver); err != nil {
			t.Logf("push consumer into %s refused: %v", deliver, err)
		}
	}
	// Canary: a push consumer does deliver where the events account has a
	// listener; once it has delivered everything, so could the others.
	if err := create("canary", "canary.deliveries"); err != nil {
		t.Fatal(err)
	}
	for i := range total {
		if _, err := canary.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("canary push consumer delivered %d of %d: %v", i, total, err)
		}
	}
	if v, n := e.checkpoint(), e.bucketMsgs(); v != "lsn-1" || n != 1 {
		t.Fatalf("checkpoint bucket changed: %q, %d messages", v, n)
	}
	if n := e.requests["_SLUICE.pg1.backfill"].Load(); n != 0 {
		t.Fatalf("%d control requests delivered by a push consumer", n)
	}
	// Delivered into $JS.API.STREAM.PURGE of the events account (it had a
	// listener): JetStream ignores requests without a client's identity.
	if err := waitFor(5*time.Second, func() bool { return delivered(admin, "purge") >= total }); err != nil {
		t.Fatalf("the purge-target consumer did not deliver: %v", err)
	}
	if n := int(e.msgs()); n != total {
		t.Fatalf("stream has %d messages after a push into the purge API, want %d", n, total)
	}

	// Without the split: a stream in the state account, a push consumer
	// into the bucket and the control subject. Both arrive.
	ctx := context.Background()
	sjs, _ := jetstream.New(e.state)
	if _, err := sjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SHARED", Subjects: []string{"shared.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := sjs.Publish(ctx, "shared.x", []byte("forged-lsn")); err != nil {
		t.Fatal(err)
	}
	for name, deliver := range map[string]string{"kv": targets["kv"], "control": targets["control"]} {
		if err := apiErr(admin, "$JS.API.CONSUMER.CREATE.SHARED."+name, map[string]any{
			"stream_name": "SHARED", "config": map[string]any{"name": name, "deliver_subject": deliver, "ack_policy": "none"},
		}); err != nil {
			t.Fatal(err)
		}
	}
	// (The stream stores a delivered message under its original subject:
	// the bucket gains a foreign message rather than a new key.)
	if err := waitFor(5*time.Second, func() bool {
		return e.bucketMsgs() == 2 && e.requests["_SLUICE.pg1.backfill"].Load() == 1
	}); err != nil {
		t.Fatalf("canary: in a shared account the push consumer did not reach the bucket and the control subject (bucket %d messages, control requests %d)",
			e.bucketMsgs(), e.requests["_SLUICE.pg1.backfill"].Load())
	}
}

// delivered is a consumer's delivered count on the event stream, as the
// admin sees it.
func delivered(admin *nats.Conn, consumer string) int {
	m, err := admin.Request(sink.EventsAPIPrefix+".CONSUMER.INFO."+secStream+"."+consumer, nil, 2*time.Second)
	if err != nil {
		return -1
	}
	var info struct {
		Delivered struct {
			Consumer int `json:"consumer_seq"`
		} `json:"delivered"`
	}
	_ = json.Unmarshal(m.Data, &info)
	return info.Delivered.Consumer
}

func waitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// A read login cannot read the checkpoint bucket or use the control
// subjects, and cannot delete, list or exceed the consumers; a backfill
// login can request a backfill of its own source only.
func TestReadAndBackfillLogins(t *testing.T) {
	e := newSecEnv(t, func(c *sink.ServerConfig) {
		c.MaxConsumers = 3
		c.Users = []sink.User{
			{User: "reader", Password: "rd-pw", Permissions: sink.PermRead},
			{User: "other", Password: "ot-pw", Permissions: sink.PermRead},
			{User: "bf", Password: "bf-pw", Permissions: sink.PermBackfill},
		}
	})
	rd := e.connect(nats.UserInfo("reader", "rd-pw"))
	other := e.connect(nats.UserInfo("other", "ot-pw"))
	bf := e.connect(nats.UserInfo("bf", "bf-pw"))
	admin := e.admin()
	ctx := context.Background()

	// The bucket: not through $KV., not through the API (canary: admin).
	kvSub, err := rd.SubscribeSync("$KV.>")
	if err != nil {
		t.Fatal(err)
	}
	adminKV, err := admin.SubscribeSync("$KV." + secBucket + ".>")
	if err != nil {
		t.Fatal(err)
	}
	_ = rd.Flush()
	_ = admin.Flush()
	if _, err := e.kv.PutString(ctx, "pg1", "lsn-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := adminKV.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("canary: admin saw no bucket update: %v", err)
	}
	_ = rd.Flush()
	if m, err := kvSub.NextMsgWithContext(expired()); err == nil {
		t.Fatalf("reader saw bucket update %s", m.Subject)
	}
	for _, subj := range []string{
		"$JS.API.DIRECT.GET." + secKVStrm + ".$KV." + secBucket + ".pg1",
		"$JS.API.STREAM.INFO." + secKVStrm,
	} {
		if err := apiErr(rd, subj, nil); err == nil {
			t.Errorf("reader: %s succeeded", subj)
		}
		if err := apiErr(admin, subj, nil); err != nil {
			t.Errorf("canary: admin %s: %v", subj, err)
		}
	}
	if err := apiErr(rd, "$JS.API.STREAM.MSG.GET."+secKVStrm, map[string]any{"last_by_subj": "$KV." + secBucket + ".pg1"}); err == nil {
		t.Error("reader: STREAM.MSG.GET on the bucket succeeded")
	}
	if err := apiErr(admin, "$JS.API.STREAM.MSG.GET."+secKVStrm, map[string]any{"last_by_subj": "$KV." + secBucket + ".pg1"}); err != nil {
		t.Errorf("canary: admin STREAM.MSG.GET on the bucket: %v", err)
	}
	rjs, _ := jetstream.New(rd)
	if _, err := rjs.KeyValue(ctx, secBucket); err == nil {
		t.Error("reader opened the checkpoint bucket")
	}
	// The stream is readable by message, as the canary for the reader's
	// API path.
	if err := apiErr(rd, "$JS.API.STREAM.MSG.GET."+secStream, map[string]any{"seq": 1}); err != nil {
		t.Fatalf("canary: reader STREAM.MSG.GET on the event stream: %v", err)
	}

	// Control subjects: backfill yes (own source only), read no.
	if _, err := bf.Request("_SLUICE.pg1.backfill", []byte(`{"tables":["public.orders"]}`), 2*time.Second); err != nil {
		t.Fatalf("backfill login's control request: %v", err)
	}
	if _, err := rd.Request("_SLUICE.pg1.backfill", []byte(`{}`), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("read login's control request: %v, want no responders", err)
	}
	if _, err := bf.Request("_SLUICE.pg2.backfill", []byte(`{}`), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("backfill login reached another source's control subject: %v", err)
	}
	if _, err := admin.Request("_SLUICE.pg2.backfill", []byte(`{}`), 2*time.Second); err != nil {
		t.Fatalf("canary: admin to pg2's control subject: %v", err)
	}
	if n := e.requests["_SLUICE.pg1.backfill"].Load(); n != 1 {
		t.Fatalf("pg1 control requests = %d, want the backfill login's 1", n)
	}
	// The backfill login reads too.
	bjs, _ := jetstream.New(bf)
	if _, err := bjs.Stream(ctx, secStream); err != nil {
		t.Fatalf("backfill login stream info: %v", err)
	}

	// Consumers: another login's cannot be deleted or listed.
	rst, err := rjs.Stream(ctx, secStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rst.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "reader-1", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{
		"$JS.API.CONSUMER.DELETE." + secStream + ".reader-1",
		sink.EventsAPIPrefix + ".CONSUMER.DELETE." + secStream + ".reader-1",
		"$JS.API.CONSUMER.NAMES." + secStream,
		"$JS.API.CONSUMER.LIST." + secStream,
	} {
		if err := apiErr(other, subj, nil); err == nil {
			t.Errorf("another read login: %s succeeded", subj)
		}
	}
	if delivered(admin, "reader-1") < 0 {
		t.Fatal("reader-1 is gone")
	}
	// The consumer limit (3): reader-1 and two more, then no more.
	for i := range 2 {
		if _, err := rst.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "more-" + strconv.Itoa(i)}); err != nil {
			t.Fatalf("canary: consumer %d under the limit: %v", i+2, err)
		}
	}
	if _, err := rst.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "one-too-many"}); err == nil {
		t.Error("a fourth consumer was created with MaxConsumers 3")
	} else {
		t.Logf("fourth consumer: %v", err)
	}
	// Canary for the delete: the admin can.
	if err := apiErr(admin, sink.EventsAPIPrefix+".CONSUMER.DELETE."+secStream+".reader-1", nil); err != nil {
		t.Fatalf("canary: admin deletes reader-1: %v", err)
	}
}

// A login subscribed to _INBOX.> sees its own replies and nobody else's.
func TestInboxIsolation(t *testing.T) {
	e := newSecEnv(t, func(c *sink.ServerConfig) {
		c.Users = []sink.User{
			{User: "spy", Password: "sp-pw", Permissions: sink.PermRead},
			{User: "other", Password: "ot-pw", Permissions: sink.PermRead},
			{User: "bf", Password: "bf-pw", Permissions: sink.PermBackfill},
		}
	})
	spy := e.connect(nats.UserInfo("spy", "sp-pw"))
	other := e.connect(nats.UserInfo("other", "ot-pw"))
	bf := e.connect(nats.UserInfo("bf", "bf-pw"))
	admin := e.admin()
	inbox, err := spy.SubscribeSync("_INBOX.>")
	if err != nil {
		t.Fatal(err)
	}
	_ = spy.Flush()
	ctx := context.Background()
	for _, nc := range []*nats.Conn{other, bf, admin} {
		prefix := "$JS.API"
		if nc == admin {
			prefix = sink.EventsAPIPrefix
		}
		if err := apiErr(nc, prefix+".STREAM.INFO."+secStream, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bf.Request("_SLUICE.pg1.backfill", []byte(`{}`), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Request("_SLUICE.pg1.backfill", []byte(`{}`), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	ojs, _ := jetstream.New(other)
	st, _ := ojs.Stream(ctx, secStream)
	c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := c.Fetch(1, jetstream.FetchMaxWait(2*time.Second)); err != nil || len(collect(b)) != 1 {
		t.Fatalf("other's fetch: %v", err)
	}
	// Canary: the spy's own reply arrives on its _INBOX.> subscription.
	if err := apiErr(spy, "$JS.API.STREAM.INFO."+secStream, nil); err != nil {
		t.Fatal(err)
	}
	m, err := inbox.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("canary: the spy did not see its own reply: %v", err)
	}
	if !strings.Contains(string(m.Data), "stream_info_response") {
		t.Fatalf("the spy's first _INBOX message is not its own reply: %.200s", m.Data)
	}
	_ = spy.Flush()
	if m, err := inbox.NextMsgWithContext(expired()); err == nil {
		t.Fatalf("the spy saw another reply: %s %.200s", m.Subject, m.Data)
	}
}

func collect(b jetstream.MessageBatch) []jetstream.Msg {
	var out []jetstream.Msg
	for m := range b.Messages() {
		out = append(out, m)
	}
	return out
}

// expired is a context that is already done: NextMsgWithContext then
// returns only what has already arrived.
func expired() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// A consumer group member with a read login creates its pinned consumers,
// pulls, acks and unpins; it still cannot delete a consumer or the stream,
// and a client without a login or with a wrong password is refused.
func TestReadLoginConsumerGroup(t *testing.T) {
	e := newSecEnv(t, func(c *sink.ServerConfig) {
		c.Users = []sink.User{{User: "reader", Password: "rd-pw", Permissions: sink.PermRead}}
	})
	for _, opts := range [][]nats.Option{nil, {nats.UserInfo("reader", "wrong")}, {nats.UserInfo("nobody", "rd-pw")}} {
		nc, err := nats.Connect(e.url, opts...)
		if err == nil {
			nc.Close()
			t.Fatalf("connected with %d options and no valid login", len(opts))
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("refused with %v, want an authorization violation", err)
		}
	}
	rd := e.connect(nats.UserInfo("reader", "rd-pw"))
	admin := e.admin()
	rjs, _ := jetstream.New(rd)

	// The member runs until it handled the stream's event.
	ctx, cancel := context.WithCancel(context.Background())
	handled := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		done <- consumer.RunGroup(ctx, rjs, consumer.GroupConfig{
			Stream: secStream, Prefix: "cdc", Source: "pg1", Partitions: 8, Group: "grp", Member: "reader",
			TakeoverAfter: consumer.MinTakeoverAfter,
		}, func(_ context.Context, _ int, m jetstream.Msg) error {
			handled <- m.Subject()
			return nil
		})
	}()
	select {
	case s := <-handled:
		if s != "cdc.pg1.public.orders.7" {
			t.Fatalf("the member handled %s", s)
		}
	case err := <-done:
		t.Fatalf("RunGroup with a read login: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the read login's group member handled nothing")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunGroup: %v", err)
	}
	if err := waitFor(5*time.Second, func() bool {
		m, err := admin.Request(sink.EventsAPIPrefix+".CONSUMER.INFO."+secStream+".grp-7", nil, 2*time.Second)
		return err == nil && strings.Contains(string(m.Data), `"ack_floor":{"consumer_seq":1,"stream_seq":1`)
	}); err != nil {
		t.Fatalf("the member's ack did not reach grp-7: %v", err)
	}
	rst, err := rjs.Stream(context.Background(), secStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := rst.UnpinConsumer(context.Background(), "grp-7", consumer.GroupPriority); err != nil {
		t.Fatalf("read login unpins its group's consumer: %v", err)
	}

	for _, subj := range []string{
		"$JS.API.CONSUMER.DELETE." + secStream + ".grp-7",
		sink.EventsAPIPrefix + ".CONSUMER.DELETE." + secStream + ".grp-7",
		"$JS.API.STREAM.DELETE." + secStream,
		sink.EventsAPIPrefix + ".STREAM.DELETE." + secStream,
		"$JS.API.CONSUMER.UNPIN." + secKVStrm + ".x",
	} {
		if err := apiErr(rd, subj, nil); err == nil {
			t.Errorf("read login: %s succeeded", subj)
		}
	}
	if delivered(admin, "grp-7") < 0 || e.msgs() == 0 {
		t.Fatal("grp-7 or the stream is gone")
	}
	// Canary: the admin can delete it.
	if err := apiErr(admin, sink.EventsAPIPrefix+".CONSUMER.DELETE."+secStream+".grp-7", nil); err != nil {
		t.Fatalf("canary: admin deletes grp-7: %v", err)
	}
}
