package main

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

// serveHTTP serves /metrics, /healthz and /readyz (and, when asked,
// /debug/pprof/) on cfg.Listen until ctx ends. Ready means the source has
// its log open, the last checkpoint write succeeded and JetStream answers.
func serveHTTP(ctx context.Context, cfg HTTPConfig, reg *prometheus.Registry, m *capture.Metrics, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) error {
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
		return fmt.Errorf("http.listen %s: %w (is another process using the port? choose another)", cfg.Listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "error", err)
		}
	}()
	log.Info("http listening", "addr", ln.Addr().String(), "paths", paths)
	return nil
}
