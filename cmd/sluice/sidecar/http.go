package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-cdc/sluice/sources/capture"
)

// listenHTTP listens on cfg.Listen and returns serve, which serves
// /metrics, /healthz and /readyz (and, when asked, /debug/pprof/) until ctx
// ends and returns nil then, or the error that stopped the server. Ready
// means the source has its log open, the last checkpoint write succeeded
// and JetStream answers.
func listenHTTP(cfg HTTPConfig, reg *prometheus.Registry, m *capture.Metrics, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) (serve func(context.Context) error, err error) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		err := m.Ready()
		if err == nil && !nc.IsConnected() {
			err = errors.New("not connected to NATS")
		}
		if err == nil {
			actx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if _, jerr := js.AccountInfo(actx); jerr != nil {
				err = fmt.Errorf("JetStream does not answer: %w", jerr)
			}
		}
		if err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	paths := "/metrics /healthz /readyz"
	if cfg.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		paths += " /debug/pprof/"
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w (is another process using the port? choose another)", cfg.Listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("http listening", "addr", ln.Addr().String(), "paths", paths)
	return func(ctx context.Context) error { return serveHTTP(ctx, srv, ln, cfg.Listen) }, nil
}

// serveHTTP serves srv on ln until ctx ends, and returns nil then, or the
// error that stopped the server: a dead listener stops sluice, rather
// than leave it running blind to its probes and metrics.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener, listen string) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }() // ends before serveHTTP returns
	select {
	case err := <-served:
		return fmt.Errorf("http.listen %s: the HTTP server stopped: %w", listen, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx) // a slow scrape is cut off at the deadline
	<-served
	return nil
}

// ListenMetrics listens on listen and returns serve, which serves
// /metrics from reg and /healthz until ctx ends (then nil), or returns
// what stopped the server. Other commands (sluice apply) serve their
// metrics with it.
func ListenMetrics(listen string, reg *prometheus.Registry, log *slog.Logger) (serve func(context.Context) error, addr net.Addr, err error) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w (is another process using the port? choose another)", listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("http listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz")
	return func(ctx context.Context) error { return serveHTTP(ctx, srv, ln, listen) }, ln.Addr(), nil
}
