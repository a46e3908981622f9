package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink"
)

const clusterName = "bench"

// The route login of the bench's clusters: routes must authenticate.
const routeUser, routePassword = "bench-route", "bench-route-pw"

// clusterNodes are in-process NATS servers that, with sluice's embedded
// one, make a cluster whose streams can have replicas.
type clusterNodes struct {
	servers  []*sink.Server
	routes   []string // nats://host:port of every member's route port
	ownRoute string   // host:port of sluice's route port
}

// startClusterNodes starts members 2..n of an n-member cluster; member 1
// is left for sluice (or the caller) to take.
func startClusterNodes(dir string, n int) (*clusterNodes, error) {
	c := &clusterNodes{}
	for range n {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		c.routes = append(c.routes, "nats://"+a)
	}
	c.ownRoute = strings.TrimPrefix(c.routes[0], "nats://")
	for i := 1; i < n; i++ {
		listen, err := freeAddr()
		if err != nil {
			c.stop()
			return nil, err
		}
		srv, err := sink.StartServer(sink.ServerConfig{
			Name:       "n" + strconv.Itoa(i+1),
			Listen:     listen,
			StoreDir:   filepath.Join(dir, "n"+strconv.Itoa(i+1)),
			MaxPayload: 8 << 20,
			Cluster: &sink.ClusterConfig{Name: clusterName,
				Listen: strings.TrimPrefix(c.routes[i], "nats://"), Routes: c.routes, User: routeUser, Password: routePassword},
		})
		if err != nil {
			c.stop()
			return nil, err
		}
		c.servers = append(c.servers, srv)
	}
	return c, nil
}

func (c *clusterNodes) stop() {
	if c == nil {
		return
	}
	for _, s := range c.servers {
		s.Shutdown()
	}
}

// jetStreamLimit is the sink's own limit: an embedded JetStream server (a
// cluster for replicas > 1) taking n messages of sluice's size, on as many
// partition subjects, by async publish with sluice's window, with or
// without Nats-Msg-Id. It returns messages per second, first publish to
// last ack.
//
// With replicas, leader names the member that is to lead the stream, as
// the one that led sluice's in the same round: the client publishes
// through n1 as sluice does, and a leader elsewhere costs every message a
// route hop there and a replication entry back. Left to the election, the
// limit moved by a third between rounds as its leader came and went.
func jetStreamLimit(ctx context.Context, dir string, o options, size msgSize, withID bool, leader string) (float64, error) {
	url, stop, err := startLimitServers(dir, o.replicas)
	if err != nil {
		return 0, err
	}
	defer stop()
	nc, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	var failed atomic.Int64
	const window = 4096 // sluice's default stream.max_in_flight
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(window),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { failed.Add(1) }))
	if err != nil {
		return 0, err
	}
	// A cluster answers once it has elected its leaders.
	err = sink.Retry(ctx, discardLogger(), "create the limit stream", time.Minute, func(ctx context.Context) error {
		_, err := sink.EnsureStream(ctx, js, sink.StreamConfig{Name: "LIMIT", Prefix: "cdc", Source: "bench",
			Partitions: o.partitions, Replicas: o.replicas, MaxAge: 7 * 24 * time.Hour, DuplicateWindow: sink.DefaultDuplicateWindow})
		return err
	})
	if err != nil {
		return 0, err
	}
	if o.replicas > 1 && leader != "" {
		if err := moveLeader(ctx, nc, js, "LIMIT", leader); err != nil {
			return 0, err
		}
	}
	subjects := make([]string, o.partitions)
	for i := range subjects {
		subjects[i] = "cdc.bench.public.bench." + strconv.Itoa(i)
	}
	data := []byte(strings.Repeat("x", size.data))
	idPrefix := "bench:0/" + strings.Repeat("0", max(size.id-20, 1)) + ":"
	start := time.Now()
	for i := range o.rows {
		m := &nats.Msg{Subject: subjects[i%len(subjects)], Data: data}
		if withID {
			m.Header = nats.Header{jetstream.MsgIDHeader: []string{idPrefix + strconv.Itoa(i)}}
		}
		for {
			_, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute))
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return 0, fmt.Errorf("publish to the JetStream limit stream: %w", err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	took := time.Since(start)
	if n := failed.Load(); n > 0 {
		return 0, fmt.Errorf("%d of %d publishes to the JetStream limit stream failed", n, o.rows)
	}
	return float64(o.rows) / took.Seconds(), nil
}

// startLimitServers starts one embedded server, or a cluster of n.
func startLimitServers(dir string, n int) (string, func(), error) {
	listen, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	cfg := sink.ServerConfig{Name: "n1", Listen: listen, StoreDir: filepath.Join(dir, "n1"), MaxPayload: 8 << 20}
	var peers *clusterNodes
	if n > 1 {
		if peers, err = startClusterNodes(dir, n); err != nil {
			return "", nil, err
		}
		cfg.Cluster = &sink.ClusterConfig{Name: clusterName, Listen: peers.ownRoute, Routes: peers.routes, User: routeUser, Password: routePassword}
	}
	srv, err := sink.StartServer(cfg)
	if err != nil {
		peers.stop()
		return "", nil, err
	}
	// Over TCP as the local admin, whose account has JetStream.
	admin := srv.LocalAdmin()
	u := strings.Replace(srv.ClientURL(), "nats://", "nats://"+admin.User+":"+admin.Password+"@", 1)
	return u, func() { srv.Shutdown(); peers.stop() }, nil
}

// moveLeader has the stream's leader hand over to member, as the JetStream
// API's step-down with a preferred placement does (nats.go has no call for
// it), and waits until member leads.
func moveLeader(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, stream, member string) error {
	req, err := json.Marshal(server.JSApiLeaderStepdownRequest{Placement: &server.Placement{Preferred: member}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	asked, at := "", time.Time{}
	var last error // the last request's failure, retried until the minute is up
	for {
		s, err := js.Stream(ctx, stream)
		if err == nil && s.CachedInfo().Cluster != nil {
			switch leader := s.CachedInfo().Cluster.Leader; leader {
			case member:
				return nil
			case "":
				// Electing.
			default:
				// An election the request started may land elsewhere, or
				// back: whoever leads is asked in turn, the same leader
				// again only after a while, not while it hands over.
				if leader == asked && time.Since(at) < 2*time.Second {
					break
				}
				asked, at = leader, time.Now()
				var resp server.JSApiStreamLeaderStepDownResponse
				msg, err := nc.Request(jetstream.DefaultAPIPrefix+"STREAM.LEADER.STEPDOWN."+stream, req, 5*time.Second)
				if err == nil && json.Unmarshal(msg.Data, &resp) == nil && resp.Error != nil {
					err = resp.Error
				}
				if err != nil {
					last = fmt.Errorf("ask %s to hand over: %w", leader, err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream %s: %s does not lead it within a minute (%v)", stream, member, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
