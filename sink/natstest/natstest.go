// Package natstest starts real embedded NATS JetStream servers for tests.
package natstest

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources/proctest"
)

// Admin is the admin login of every natstest server (and cluster member):
// the servers require logins, and Connect uses this one. It lives in
// sink.AccountState; the event streams of a sluice run are under
// sink.EventsAPIPrefix from there.
var Admin = sink.User{User: "natstest-admin", Password: "natstest-admin-pw", Permissions: sink.PermAdmin}

// RouteUser and RoutePassword authenticate the routes of natstest clusters.
const (
	RouteUser     = "natstest-route"
	RoutePassword = "natstest-route-pw"
)

// Server is one embedded JetStream server on a loopback port.
type Server struct {
	t      testing.TB
	cfg    sink.ServerConfig
	server *sink.Server
}

// New starts a single-node JetStream server in a temp dir; it stops with
// the test. Under -short it skips the test (SkipShort).
func New(t testing.TB) *Server {
	t.Helper()
	return NewWith(t, nil)
}

// NewWith is New with the server config changed by edit first, e.g. to
// lay the accounts out for one source (Prefix, Source, Stream) and add
// read logins to Users.
func NewWith(t testing.TB, edit func(*sink.ServerConfig)) *Server {
	t.Helper()
	SkipShort(t)
	s := &Server{t: t, cfg: sink.ServerConfig{
		Name:       "natstest",
		Listen:     "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		StoreDir:   filepath.Join(t.TempDir(), "jetstream"),
		MaxPayload: 1 << 20,
		Users:      []sink.User{Admin},
	}}
	if edit != nil {
		edit(&s.cfg)
	}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server (again, after Stop) on the same port and store.
func (s *Server) Start() {
	s.t.Helper()
	srv, err := sink.StartServer(s.cfg)
	if err != nil {
		s.t.Fatalf("start NATS: %v", err)
	}
	s.server = srv
}

// Stop shuts the server down; its store stays for a later Start.
func (s *Server) Stop() {
	if s.server != nil {
		s.server.Shutdown()
		s.server = nil
	}
}

// SkipShort skips t under -short, which runs only tests that start no
// server. A test that starts a NATS server without New or PlanCluster
// (sink.StartServer, or sluice's run with its embedded server) calls it
// first.
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real NATS server: not in -short")
	}
}

// URL is the client URL.
func (s *Server) URL() string { return "nats://" + s.cfg.Listen }

// Name is the server name, as JetStream names stream leaders and peers.
func (s *Server) Name() string { return s.cfg.Name }

// Sink is the running server, for its in-process connections.
func (s *Server) Sink() *sink.Server { return s.server }

// Running tells whether the server is up.
func (s *Server) Running() bool { return s.server != nil }

// Plan reserves the names, ports and store dirs of an n-member cluster.
// Members start in-process (Start) or are taken by a sluice process, whose
// config then uses Member(i) and Routes().
type Plan struct {
	t       testing.TB
	Name    string
	members []sink.ServerConfig
	servers []*Server
}

// PlanCluster reserves an n-member cluster named "natstest". Under -short
// it skips the test (SkipShort): the plan is there to start servers.
func PlanCluster(t testing.TB, n int) *Plan {
	t.Helper()
	SkipShort(t)
	p := &Plan{t: t, Name: "natstest", servers: make([]*Server, n)}
	dir := t.TempDir()
	var routes []string
	for range n {
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(FreePort(t)))
	}
	for i := range n {
		p.members = append(p.members, sink.ServerConfig{
			Name:       fmt.Sprintf("n%d", i+1),
			Listen:     "127.0.0.1:" + strconv.Itoa(FreePort(t)),
			StoreDir:   filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			MaxPayload: 1 << 20,
			Users:      []sink.User{Admin},
			Cluster: &sink.ClusterConfig{
				Name:     p.Name,
				Listen:   strings.TrimPrefix(routes[i], "nats://"),
				Routes:   routes,
				User:     RouteUser,
				Password: RoutePassword,
			},
		})
	}
	return p
}

// Encrypt makes every member encrypt its store with enc; call it before
// starting them.
func (p *Plan) Encrypt(enc *sink.StoreEncryption) {
	for i := range p.members {
		p.members[i].Encryption = enc
	}
}

// Member is member i's server config.
func (p *Plan) Member(i int) sink.ServerConfig { return p.members[i] }

// Routes are the route URLs of every member.
func (p *Plan) Routes() []string { return p.members[0].Cluster.Routes }

// URLs is every member's client URL, comma-separated, as nats.Connect takes it.
func (p *Plan) URLs() string {
	var urls []string
	for _, m := range p.members {
		urls = append(urls, "nats://"+m.Listen)
	}
	return strings.Join(urls, ",")
}

// Start starts member i in-process; it stops with the test.
func (p *Plan) Start(i int) *Server {
	p.t.Helper()
	s := &Server{t: p.t, cfg: p.members[i]}
	s.Start()
	p.t.Cleanup(s.Stop)
	p.servers[i] = s
	return s
}

// Server is member i if this process started it.
func (p *Plan) Server(i int) *Server { return p.servers[i] }

// ServerNamed is the in-process member called name, or nil.
func (p *Plan) ServerNamed(name string) *Server {
	for _, s := range p.servers {
		if s != nil && s.Name() == name {
			return s
		}
	}
	return nil
}

// NewCluster starts an n-member cluster in-process and waits until
// JetStream has a meta leader.
func NewCluster(t testing.TB, n int) *Plan {
	t.Helper()
	p := PlanCluster(t, n)
	for i := range n {
		p.Start(i)
	}
	nc := p.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sink.WaitJetStream(ctx, js, discard, time.Minute); err != nil {
		t.Fatalf("natstest cluster: %v", err)
	}
	return p
}

// Connect opens a client connection to any member, failing over between
// them, closed with the test.
func (p *Plan) Connect() *nats.Conn {
	p.t.Helper()
	nc, err := nats.Connect(p.URLs(), nats.UserInfo(Admin.User, Admin.Password), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		p.t.Fatalf("connect to the NATS cluster: %v", err)
	}
	p.t.Cleanup(nc.Close)
	return nc
}

// StreamLeader is the server name of the stream's current leader, waiting
// up to a minute for one to be elected.
func StreamLeader(t testing.TB, js jetstream.JetStream, stream string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := js.Stream(ctx, stream)
		var leader string
		if err == nil && s.CachedInfo().Cluster != nil {
			leader = s.CachedInfo().Cluster.Leader
		}
		cancel()
		if leader != "" {
			return leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s has no leader after a minute (last error: %v)", stream, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// MoveLeader makes one of want the stream's leader by asking the current
// leader to step down until the election lands there. It uses js's API
// prefix (sink.EventsAPIPrefix for a sluice run's stream, seen by an admin).
func MoveLeader(t testing.TB, nc *nats.Conn, js jetstream.JetStream, stream string, want ...string) string {
	t.Helper()
	prefix := strings.TrimSuffix(js.Options().APIPrefix, ".")
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix[:len(jetstream.DefaultAPIPrefix)-1]
	}
	for attempt := 0; attempt < 30; attempt++ {
		leader := StreamLeader(t, js, stream)
		for _, w := range want {
			if leader == w {
				return leader
			}
		}
		_, _ = nc.Request(prefix+".STREAM.LEADER.STEPDOWN."+stream, nil, 5*time.Second)
		// The election is over when another member leads (a step-down
		// request that got lost is tried again after a while).
		deadline := time.Now().Add(10 * time.Second)
		for StreamLeader(t, js, stream) == leader && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Fatalf("stream %s: could not move its leader to %v", stream, want)
	return ""
}

// Connect opens a TCP client connection that reconnects forever, closed
// with the test.
func (s *Server) Connect() *nats.Conn {
	s.t.Helper()
	nc, err := nats.Connect(s.URL(), nats.UserInfo(Admin.User, Admin.Password), nats.MaxReconnects(-1), nats.ReconnectWait(50e6))
	if err != nil {
		s.t.Fatalf("connect to NATS: %v", err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

// Stream ensures the event stream of a source named t on one server:
// stream T, subjects under prefix cdc, 4 partitions, one replica.
func Stream(t testing.TB, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	s, err := sink.EnsureStream(context.Background(), js, sink.StreamConfig{
		Name: "T", Prefix: "cdc", Source: "t", Partitions: 4, Replicas: 1, DuplicateWindow: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// MsgIDs returns the Nats-Msg-Id of every message in s, in stream order:
// what a test compares to tell that each event was stored exactly once,
// in order.
func MsgIDs(t testing.TB, s jetstream.Stream) []string {
	t.Helper()
	ctx := context.Background()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return ids
}

// FilesHolding reads every file under dir and names those whose bytes
// contain s (paths relative to dir), with the number of files read: a
// probe for values that must not be readable on disk.
func FilesHolding(t testing.TB, dir, s string) (found []string, files int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, []byte(s)) {
			found = append(found, strings.TrimPrefix(path, dir))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	return found, files
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := proctest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

var discard = slog.New(slog.DiscardHandler)
