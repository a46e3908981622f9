package sink_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources"
)

// canary stands for a value that must never be readable from the disk.
const canary = "canary-ssn-731-44-0192"

var (
	keyA = strings.Repeat("a", 40)
	keyB = strings.Repeat("b", 40)
	keyC = strings.Repeat("c", 40)
)

var discardLog = slog.New(slog.DiscardHandler)

// encStore is one store dir, started and stopped with different keys.
type encStore struct {
	t   *testing.T
	dir string
	cfg sink.ServerConfig
}

func newEncStore(t *testing.T) *encStore {
	natstest.SkipShort(t)
	dir := filepath.Join(t.TempDir(), "store")
	return &encStore{t: t, dir: dir, cfg: sink.ServerConfig{
		Name: "enc", Listen: "127.0.0.1:" + strconv.Itoa(natstest.FreePort(t)), StoreDir: dir, MaxPayload: 1 << 20,
	}}
}

func (s *encStore) start(enc *sink.StoreEncryption) (*sink.Server, error) {
	cfg := s.cfg
	cfg.Encryption = enc
	return sink.StartServer(cfg)
}

func (s *encStore) mustStart(enc *sink.StoreEncryption) *sink.Server {
	s.t.Helper()
	srv, err := s.start(enc)
	if err != nil {
		s.t.Fatalf("start: %v", err)
	}
	s.t.Cleanup(srv.Shutdown)
	return srv
}

const encStream, encBucket = "CDC_PG1", "sluice_checkpoints"

// write publishes events from..to-1 carrying the canary and saves a
// checkpoint at to that carries it too.
func writeCanaries(t *testing.T, srv *sink.Server, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	events, control := jetStreams(t, srv)
	stream, err := sink.EnsureStream(ctx, events, sink.StreamConfig{
		Name: encStream, Prefix: "cdc", Source: "pg1", Partitions: 4, Replicas: 1, DuplicateWindow: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < to; i++ {
		body := fmt.Sprintf(`{"op":"c","after":{"id":%d,"ssn":%q}}`, i, canary)
		if _, err := events.Publish(ctx, "cdc.pg1.public.users."+strconv.Itoa(i%4), []byte(body), jetstream.WithMsgID("pg1:"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	store, err := checkpoint.Open(ctx, control, encBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Save refuses to overwrite a checkpoint it has not read.
	if _, _, err := store.Load(ctx, "pg1"); err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(ctx, checkpoint.Checkpoint{Source: "pg1", Position: sources.Position(canary + "/" + strconv.Itoa(to)), StreamSeq: info.State.LastSeq}); err != nil {
		t.Fatal(err)
	}
}

// readBack checks that the stream holds exactly events 0..n-1 and the
// checkpoint is the one saved at n, without creating anything.
func readBack(t *testing.T, srv *sink.Server, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	events, control := jetStreams(t, srv)
	stream, err := events.Stream(ctx, encStream)
	if err != nil {
		t.Fatalf("stream %s after restart: %v", encStream, err)
	}
	got := natstest.MsgIDs(t, stream)
	if len(got) != n {
		t.Fatalf("stream holds %d events, want %d", len(got), n)
	}
	for i, id := range got {
		if id != "pg1:"+strconv.Itoa(i) {
			t.Fatalf("event %d is %s", i, id)
		}
	}
	if _, err := control.KeyValue(ctx, encBucket); err != nil {
		t.Fatalf("checkpoint bucket after restart: %v", err)
	}
	store, err := checkpoint.Open(ctx, control, encBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	cp, ok, err := store.Load(ctx, "pg1")
	if want := sources.Position(canary + "/" + strconv.Itoa(n)); err != nil || !ok || cp.Position != want {
		t.Fatalf("checkpoint = %q, %v, %v; want %q", cp.Position, ok, err, want)
	}
}

func jetStreams(t *testing.T, srv *sink.Server) (events, control jetstream.JetStream) {
	t.Helper()
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cc, err := srv.ConnectControl("test-control")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Close)
	if events, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if control, err = jetstream.New(cc); err != nil {
		t.Fatal(err)
	}
	return events, control
}

// fingerprint is every file under dir with a hash of its contents.
func fingerprint(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	fp := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		fp[path] = sha256.Sum256(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// With encryption on, no file of the store holds the canary published in
// events and saved in the checkpoint, whether the server runs or has
// flushed everything and stopped; with encryption off the same probe finds
// it, so the probe can fail.
func TestStoreEncryptionHidesData(t *testing.T) {
	for _, c := range []struct {
		name string
		enc  *sink.StoreEncryption
	}{
		{"off", nil},
		{"chacha", &sink.StoreEncryption{Cipher: sink.CipherChaCha, Key: keyA}},
		{"aes", &sink.StoreEncryption{Cipher: sink.CipherAES, Key: keyA}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newEncStore(t)
			srv := s.mustStart(c.enc)
			writeCanaries(t, srv, 0, 200)
			running, _ := natstest.FilesHolding(t, s.dir, canary)
			srv.Shutdown()
			stopped, files := natstest.FilesHolding(t, s.dir, canary)
			if c.enc == nil {
				if len(stopped) == 0 {
					t.Fatalf("plaintext store: the canary is in none of its %d files: the probe is blind", files)
				}
				t.Logf("plaintext store: canary found in %v", stopped)
				return
			}
			if found := append(running, stopped...); len(found) > 0 {
				t.Fatalf("encrypted store: the canary is readable in %v", found)
			}
			if files < 5 {
				t.Fatalf("only %d files in the store: nothing was written?", files)
			}
			readBack(t, s.mustStart(c.enc), 200)
		})
	}
}

// A wrong key, or none, stops the start before nats-server opens the
// store: every file stays as it was, and the right key then finds every
// event and the checkpoint.
func TestStoreEncryptionWrongKey(t *testing.T) {
	s := newEncStore(t)
	right := &sink.StoreEncryption{Key: keyA}
	srv := s.mustStart(right)
	writeCanaries(t, srv, 0, 50)
	srv.Shutdown()
	before := fingerprint(t, s.dir)

	for _, c := range []struct {
		name string
		enc  *sink.StoreEncryption
		want error
	}{
		{"wrong key", &sink.StoreEncryption{Key: keyB}, sink.ErrStoreKeyMismatch},
		{"wrong key and wrong previous key", &sink.StoreEncryption{Key: keyB, PrevKey: keyC}, sink.ErrStoreKeyMismatch},
		{"wrong cipher and key", &sink.StoreEncryption{Cipher: sink.CipherAES, Key: keyB}, sink.ErrStoreKeyMismatch},
		{"no encryption", nil, sink.ErrStoreEncrypted},
	} {
		srv, err := s.start(c.enc)
		if err == nil {
			srv.Shutdown()
			t.Fatalf("%s: the server started", c.name)
		}
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), "nats.store_encryption") {
			t.Fatalf("%s: %v; want %v naming nats.store_encryption", c.name, err, c.want)
		}
		for _, k := range []string{keyA, keyB, keyC} {
			if strings.Contains(err.Error(), k) {
				t.Fatalf("%s: the error shows a key: %v", c.name, err)
			}
		}
		t.Logf("%s: %v", c.name, err)
	}
	after := fingerprint(t, s.dir)
	if len(after) != len(before) {
		t.Fatalf("the failed starts changed the store: %d files before, %d after", len(before), len(after))
	}
	for path, sum := range before {
		if after[path] != sum {
			t.Fatalf("the failed starts changed %s", path)
		}
	}
	readBack(t, s.mustStart(right), 50)
}

// Rotation: key B with previous key A re-encrypts a store written with A;
// then B alone opens it, and A no longer does.
func TestStoreKeyRotation(t *testing.T) {
	s := newEncStore(t)
	srv := s.mustStart(&sink.StoreEncryption{Key: keyA})
	writeCanaries(t, srv, 0, 30)
	srv.Shutdown()

	srv = s.mustStart(&sink.StoreEncryption{Key: keyB, PrevKey: keyA})
	readBack(t, srv, 30)
	writeCanaries(t, srv, 30, 60)
	srv.Shutdown()

	srv = s.mustStart(&sink.StoreEncryption{Key: keyB})
	readBack(t, srv, 60)
	srv.Shutdown()
	if found, _ := natstest.FilesHolding(t, s.dir, canary); len(found) > 0 {
		t.Fatalf("the canary is readable in %v", found)
	}
	if srv, err := s.start(&sink.StoreEncryption{Key: keyA}); !errors.Is(err, sink.ErrStoreKeyMismatch) {
		if err == nil {
			srv.Shutdown()
		}
		t.Fatalf("the retired key: %v, want %v", err, sink.ErrStoreKeyMismatch)
	}
	// A rotation may change the cipher too.
	srv = s.mustStart(&sink.StoreEncryption{Cipher: sink.CipherAES, Key: keyC, PrevKey: keyB})
	srv.Shutdown()
	readBack(t, s.mustStart(&sink.StoreEncryption{Cipher: sink.CipherAES, Key: keyC}), 60)
}

// Turning encryption on for a plaintext store: nats-server encrypts it as
// it recovers it, and afterwards nothing on disk is plaintext.
func TestStoreEncryptionOfPlaintextStore(t *testing.T) {
	s := newEncStore(t)
	srv := s.mustStart(nil)
	writeCanaries(t, srv, 0, 40)
	srv.Shutdown()
	if found, _ := natstest.FilesHolding(t, s.dir, canary); len(found) == 0 {
		t.Fatal("the plaintext store does not hold the canary: the probe is blind")
	}

	enc := &sink.StoreEncryption{Key: keyA}
	srv = s.mustStart(enc)
	readBack(t, srv, 40)
	writeCanaries(t, srv, 40, 80)
	srv.Shutdown()
	if found, _ := natstest.FilesHolding(t, s.dir, canary); len(found) > 0 {
		t.Fatalf("after encrypting the store the canary is still readable in %v", found)
	}
	if _, err := s.start(nil); !errors.Is(err, sink.ErrStoreEncrypted) {
		t.Fatalf("start without encryption: %v, want %v", err, sink.ErrStoreEncrypted)
	}
	readBack(t, s.mustStart(enc), 80)
}

// Every cluster member encrypts its store, Raft logs included.
func TestStoreEncryptionCluster(t *testing.T) {
	plan := natstest.PlanCluster(t, 3)
	plan.Encrypt(&sink.StoreEncryption{Key: keyA})
	for i := range 3 {
		plan.Start(i)
	}
	nc := plan.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := sink.WaitJetStream(ctx, js, discardLog, time.Minute); err != nil {
		t.Fatal(err)
	}
	var stream jetstream.Stream
	err = sink.Retry(ctx, discardLog, "create the stream", time.Minute, func(ctx context.Context) (err error) {
		stream, err = sink.EnsureStream(ctx, js, sink.StreamConfig{Name: encStream, Prefix: "cdc", Source: "pg1", Partitions: 4, Replicas: 3, DuplicateWindow: time.Second})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := js.Publish(ctx, "cdc.pg1.public.users.0", []byte(`{"ssn":"`+canary+`","i":`+strconv.Itoa(i)+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	store, err := checkpoint.Open(ctx, js, encBucket, 3)
	if err != nil {
		t.Fatal(err)
	}
	err = sink.Retry(ctx, discardLog, "write the checkpoint", time.Minute, func(ctx context.Context) error {
		return store.Save(ctx, checkpoint.Checkpoint{Source: "pg1", Position: canary})
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := natstest.MsgIDs(t, stream); len(got) != 50 {
		t.Fatalf("stream holds %d messages, want 50", len(got))
	}
	nc.Close()
	for i := range 3 {
		plan.Server(i).Stop()
	}
	for i := range 3 {
		dir := plan.Member(i).StoreDir
		found, files := natstest.FilesHolding(t, dir, canary)
		if len(found) > 0 {
			t.Fatalf("member %d: the canary is readable in %v", i+1, found)
		}
		t.Logf("member %d: %d files, none holds the canary", i+1, files)
	}
}
