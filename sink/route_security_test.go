package sink_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
)

// Routes without authentication are refused at start, naming the settings.
func TestClusterNeedsRouteAuth(t *testing.T) {
	base := sink.ServerConfig{Name: "n1", Listen: "127.0.0.1:" + strconv.Itoa(natstest.FreePort(t)), StoreDir: t.TempDir()}
	route := "127.0.0.1:" + strconv.Itoa(natstest.FreePort(t))
	for name, c := range map[string]sink.ClusterConfig{
		"none":          {Name: "c", Listen: route, Routes: []string{"nats://" + route}},
		"user only":     {Name: "c", Listen: route, Routes: []string{"nats://" + route}, User: "u"},
		"password only": {Name: "c", Listen: route, Routes: []string{"nats://" + route}, Password: "p"},
		"tls without ca": {Name: "c", Listen: route, Routes: []string{"nats://" + route},
			TLS: &sink.RouteTLSConfig{Cert: "c.pem", Key: "k.pem"}},
	} {
		cfg := base
		cfg.Cluster = &c
		srv, err := sink.StartServer(cfg)
		if err == nil {
			srv.Shutdown()
			t.Errorf("%s: started", name)
			continue
		}
		if !strings.Contains(err.Error(), "nats.cluster.") {
			t.Errorf("%s: error %q names no nats.cluster setting", name, err)
		}
		if name == "none" && (!strings.Contains(err.Error(), "nats.cluster.user") || !strings.Contains(err.Error(), "nats.cluster.tls")) {
			t.Errorf("none: error %q should name nats.cluster.user/password and nats.cluster.tls", err)
		}
	}
}

// A server without the route password, or with a wrong one, cannot join;
// one with it can, and the cluster keeps working.
func TestRogueRouteRefused(t *testing.T) {
	plan := natstest.PlanCluster(t, 2)
	plan.Start(0)
	plan.Start(1)
	route := strings.TrimPrefix(plan.Routes()[0], "nats://")

	// At the protocol level: a route CONNECT without credentials is an
	// authorization violation.
	if reply := routeConnect(t, route, "", ""); !strings.Contains(reply, "Authorization Violation") {
		t.Fatalf("route CONNECT without credentials: %q", reply)
	}
	if reply := routeConnect(t, route, natstest.RouteUser, "wrong"); !strings.Contains(reply, "Authorization Violation") {
		t.Fatalf("route CONNECT with a wrong password: %q", reply)
	}

	noCreds := rogueServer(t, plan.Name, "nats://"+route, nil)
	wrong := rogueServer(t, plan.Name, "nats://"+natstest.RouteUser+":wrong@"+route, nil)
	// Canary: with the password, the same kind of server joins.
	legit := rogueServer(t, plan.Name, "nats://"+natstest.RouteUser+":"+natstest.RoutePassword+"@"+route, nil)
	if err := waitFor(10*time.Second, func() bool { return legit.NumRoutes() > 0 }); err != nil {
		t.Fatalf("canary: a server with the route password did not join: %v", err)
	}
	for name, s := range map[string]*server.Server{"no credentials": noCreds, "wrong password": wrong} {
		if n := s.NumRoutes(); n != 0 {
			t.Errorf("rogue with %s has %d routes", name, n)
		}
	}
	legit.Shutdown()
	clusterDelivers(t, plan.Member(0).Listen, plan.Member(1).Listen, nil)
}

// Route TLS with verified peer certificates: three members form a cluster
// and replicate a stream; servers with a certificate from another CA, or
// without TLS, cannot join.
func TestRouteTLSCluster(t *testing.T) {
	natstest.SkipShort(t)
	dir := t.TempDir()
	ca := newCA(t, "sluice test ca")
	ca.issue(t, dir, "node")
	other := newCA(t, "rogue ca")
	other.issue(t, dir, "rogue")
	var routes, listens []string
	for range 3 {
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(natstest.FreePort(t)))
		listens = append(listens, "127.0.0.1:"+strconv.Itoa(natstest.FreePort(t)))
	}
	tlsCfg := &sink.RouteTLSConfig{Cert: filepath.Join(dir, "node.pem"), Key: filepath.Join(dir, "node-key.pem"), CA: filepath.Join(dir, "sluice test ca.pem")}
	for i := range 3 {
		srv, err := sink.StartServer(sink.ServerConfig{
			Name: fmt.Sprintf("t%d", i+1), Listen: listens[i], StoreDir: filepath.Join(dir, fmt.Sprintf("t%d", i+1)), MaxPayload: 1 << 20,
			Users:   []sink.User{natstest.Admin},
			Cluster: &sink.ClusterConfig{Name: "tls", Listen: strings.TrimPrefix(routes[i], "nats://"), Routes: routes, TLS: tlsCfg},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Shutdown)
	}
	nc, err := nats.Connect("nats://"+strings.Join(listens, ",nats://"), nats.UserInfo(natstest.Admin.User, natstest.Admin.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sink.WaitJetStream(ctx, js, slog.New(slog.DiscardHandler), time.Minute); err != nil {
		t.Fatal(err)
	}
	var st jetstream.Stream
	err = sink.Retry(ctx, slog.New(slog.DiscardHandler), "create", time.Minute, func(ctx context.Context) (err error) {
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "r3.x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(30*time.Second, func() bool {
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("R3 stream over TLS routes has no current replicas: %v", err)
	}

	rogueTLS, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: filepath.Join(dir, "rogue.pem"), KeyFile: filepath.Join(dir, "rogue-key.pem"),
		CaFile: filepath.Join(dir, "sluice test ca.pem"), Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	wrongCA := rogueServer(t, "tls", routes[0], rogueTLS)
	plain := rogueServer(t, "tls", routes[0], nil)
	// Canary: a server with a certificate from the cluster's CA joins.
	goodTLS, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: tlsCfg.Cert, KeyFile: tlsCfg.Key, CaFile: tlsCfg.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	legit := rogueServer(t, "tls", routes[0], goodTLS)
	if err := waitFor(10*time.Second, func() bool { return legit.NumRoutes() > 0 }); err != nil {
		t.Fatalf("canary: a server with the CA's certificate did not join: %v", err)
	}
	for name, s := range map[string]*server.Server{"another CA": wrongCA, "no TLS": plain} {
		if n := s.NumRoutes(); n != 0 {
			t.Errorf("rogue with %s has %d routes", name, n)
		}
	}
	legit.Shutdown()
	clusterDelivers(t, listens[0], listens[2], nil)
}

// routeConnect speaks the route protocol to addr and returns the server's
// answer to CONNECT and PING.
func routeConnect(t *testing.T, addr, user, pass string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // INFO
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"pedantic\":false,\"user\":%q,\"pass\":%q,\"tls_required\":false,\"name\":\"rogue\",\"cluster\":\"natstest\"}\r\nPING\r\n", user, pass)
	var out strings.Builder
	for {
		line, err := r.ReadString('\n')
		out.WriteString(line)
		if err != nil || strings.HasPrefix(line, "-ERR") || strings.HasPrefix(line, "PONG") {
			return out.String()
		}
	}
}

// rogueServer is a plain embedded nats-server that tries to join the
// cluster through route.
func rogueServer(t *testing.T, cluster, route string, tc any) *server.Server {
	t.Helper()
	u, err := urlParse(route)
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		ServerName: "rogue-" + strconv.Itoa(natstest.FreePort(t)),
		Cluster:    server.ClusterOpts{Name: cluster, Host: "127.0.0.1", Port: server.RANDOM_PORT},
		Routes:     []*netURL{u},
	}
	if c, ok := tc.(*tlsConfig); ok && c != nil {
		c.RootCAs = c.ClientCAs
		opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = c, 2
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("rogue server did not start")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// clusterDelivers checks that a message published on one member reaches a
// subscriber on another.
func clusterDelivers(t *testing.T, from, to string, _ any) {
	t.Helper()
	login := nats.UserInfo(natstest.Admin.User, natstest.Admin.Password)
	sub, err := nats.Connect("nats://"+to, login)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	pub, err := nats.Connect("nats://"+from, login)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	s, _ := sub.SubscribeSync("ping.cluster")
	_ = sub.Flush()
	if err := waitFor(10*time.Second, func() bool {
		_ = pub.Publish("ping.cluster", []byte("x"))
		_ = pub.Flush()
		_, err := s.NextMsg(100 * time.Millisecond)
		return err == nil
	}); err != nil {
		t.Fatalf("the cluster no longer delivers from %s to %s: %v", from, to, err)
	}
}

type testCA struct {
	name string
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	der  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{name: name, key: key, cert: cert, der: der}
}

// issue writes <dir>/<name>.pem, <name>-key.pem (a certificate for
// 127.0.0.1, for server and client authentication) and <ca name>.pem.
func (ca *testCA) issue(t *testing.T, dir, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{
		name + ".pem":     {Type: "CERTIFICATE", Bytes: der},
		name + "-key.pem": {Type: "EC PRIVATE KEY", Bytes: kder},
		ca.name + ".pem":  {Type: "CERTIFICATE", Bytes: ca.der},
	} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

type (
	netURL    = url.URL
	tlsConfig = tls.Config
)

var urlParse = url.Parse
