package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Request asks a running sluice to backfill tables (sluice backfill).
type Request struct {
	Tables []string `json:"tables"`
	Where  string   `json:"where,omitempty"`
}

// Reply lists jobs, or says why the request failed.
type Reply struct {
	Jobs  []Job  `json:"jobs,omitempty"`
	Error string `json:"error,omitempty"`
}

// StartSubject and JobsSubject are where a running sluice takes backfill
// requests and reports its jobs. They start with "_" so that no stream
// prefix captures them, and only admin logins may publish there.
func StartSubject(source string) string { return "_SLUICE." + source + ".backfill" }

// JobsSubject answers with the jobs of source.
func JobsSubject(source string) string { return "_SLUICE." + source + ".jobs" }

// Serve answers backfill requests and job queries on nc until ctx ends.
func (m *Manager) Serve(ctx context.Context, nc *nats.Conn) error {
	start, err := nc.Subscribe(StartSubject(m.cfg.Source), func(msg *nats.Msg) {
		var req Request
		var rep Reply
		if err := json.Unmarshal(msg.Data, &req); err != nil {
			rep.Error = "bad backfill request: " + err.Error()
		} else if len(req.Tables) == 0 {
			rep.Error = "no table to backfill: name schema.table (MySQL: database.table)"
		} else {
			jobs, err := m.Start(ctx, req.Tables, req.Where, "request")
			rep.Jobs = jobs
			if err != nil {
				rep.Error = err.Error()
			}
		}
		respond(msg, rep)
	})
	if err != nil {
		return fmt.Errorf("listen for backfill requests: %w", err)
	}
	jobs, err := nc.Subscribe(JobsSubject(m.cfg.Source), func(msg *nats.Msg) {
		respond(msg, Reply{Jobs: m.Jobs()})
	})
	if err != nil {
		start.Unsubscribe()
		return fmt.Errorf("listen for backfill status queries: %w", err)
	}
	go func() {
		<-ctx.Done()
		start.Unsubscribe()
		jobs.Unsubscribe()
	}()
	return nil
}

func respond(msg *nats.Msg, rep Reply) {
	b, _ := json.Marshal(rep)
	_ = msg.Respond(b)
}

// Ask sends a request to the sluice of source and returns its reply.
func Ask(ctx context.Context, nc *nats.Conn, subject string, req any) (Reply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return Reply{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, b)
	if errors.Is(err, nats.ErrNoResponders) {
		return Reply{}, fmt.Errorf("no sluice answers on %s: is sluice run running for this source, and connected to this NATS?", subject)
	}
	if err != nil {
		return Reply{}, fmt.Errorf("ask %s: %w", subject, err)
	}
	var rep Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return Reply{}, fmt.Errorf("reply from %s: %w", subject, err)
	}
	if rep.Error != "" {
		return rep, errors.New(rep.Error)
	}
	return rep, nil
}
