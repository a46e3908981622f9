package backfill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-cdc/sluice/sources"
)

// Request asks a running sluice to backfill tables (sluice backfill). A
// subset is a list of structured filters, ANDed; no SQL text is accepted.
type Request struct {
	Tables  []string         `json:"tables"`
	Filters []sources.Filter `json:"filters,omitempty"`
}

// CancelRequest asks a running sluice to stop the running backfills of
// tables (sluice backfill --cancel).
type CancelRequest struct {
	Tables []string `json:"tables"`
}

// Reply lists jobs, or says why the request failed.
type Reply struct {
	Jobs  []Job  `json:"jobs,omitempty"`
	Error string `json:"error,omitempty"`
}

// MaxRequestTables bounds the tables of one request.
const MaxRequestTables = 4096

// StartSubject, CancelSubject and JobsSubject are where a running sluice
// takes backfill requests and reports its jobs. They start with "_" so
// that no stream prefix captures them; only backfill and admin logins may
// use them.
func StartSubject(source string) string { return "_SLUICE." + source + ".backfill" }

// CancelSubject stops running jobs.
func CancelSubject(source string) string { return "_SLUICE." + source + ".cancel" }

// JobsSubject answers with the jobs of source.
func JobsSubject(source string) string { return "_SLUICE." + source + ".jobs" }

// decodeStrict reads exactly one JSON object into v: an unknown field
// (such as the old "where") or trailing data is refused by name.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := err.Error()
		if strings.Contains(msg, `unknown field "where"`) {
			return errors.New(`unknown field "where": SQL conditions are not accepted; send "filters": [{"column": "region", "op": "=", "values": ["eu"]}] (sluice backfill --filter "region = eu")`)
		}
		return fmt.Errorf("%s (the request is {\"tables\": [...], \"filters\": [{\"column\", \"op\", \"values\"}]})", strings.TrimPrefix(msg, "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the request object")
	}
	return nil
}

func checkTables(tables []string) error {
	switch {
	case len(tables) == 0:
		return errors.New("no table named: name schema.table (MySQL: database.table)")
	case len(tables) > MaxRequestTables:
		return fmt.Errorf("%d tables in one request, at most %d", len(tables), MaxRequestTables)
	}
	return nil
}

// Serve answers backfill, cancel and job requests on nc until ctx ends.
// Every request is decoded strictly; a refusal says what to send instead.
func (m *Manager) Serve(ctx context.Context, nc *nats.Conn) error {
	handlers := map[string]nats.MsgHandler{
		StartSubject(m.cfg.Source): func(msg *nats.Msg) {
			var req Request
			var rep Reply
			if err := decodeStrict(msg.Data, &req); err != nil {
				rep.Error = "bad backfill request: " + err.Error()
			} else if err := checkTables(req.Tables); err != nil {
				rep.Error = "bad backfill request: " + err.Error()
			} else {
				jobs, err := m.Start(ctx, req.Tables, req.Filters, ReasonRequest)
				rep.Jobs = jobs
				if err != nil {
					rep.Error = err.Error()
				}
			}
			respond(msg, rep)
		},
		CancelSubject(m.cfg.Source): func(msg *nats.Msg) {
			var req CancelRequest
			var rep Reply
			if err := decodeStrict(msg.Data, &req); err != nil {
				rep.Error = "bad cancel request: " + err.Error()
			} else if err := checkTables(req.Tables); err != nil {
				rep.Error = "bad cancel request: " + err.Error()
			} else {
				jobs, err := m.Cancel(ctx, req.Tables)
				rep.Jobs = jobs
				if err != nil {
					rep.Error = err.Error()
				}
			}
			respond(msg, rep)
		},
		JobsSubject(m.cfg.Source): func(msg *nats.Msg) {
			respond(msg, Reply{Jobs: m.Jobs()})
		},
	}
	var subs []*nats.Subscription
	for subject, h := range handlers {
		sub, err := nc.Subscribe(subject, h)
		if err != nil {
			for _, s := range subs {
				_ = s.Unsubscribe()
			}
			return fmt.Errorf("listen on %s: %w", subject, err)
		}
		subs = append(subs, sub)
	}
	go func() {
		<-ctx.Done()
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	return nil
}

func respond(msg *nats.Msg, rep Reply) {
	b, _ := json.Marshal(rep)
	_ = msg.Respond(b)
}

// ErrNoSluice means no running sluice answers on a control subject.
var ErrNoSluice = errors.New("no sluice answers")

// Ask sends a request to the sluice of source and returns its reply.
func Ask(ctx context.Context, nc *nats.Conn, subject string, req any) (Reply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return Reply{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, b)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return Reply{}, fmt.Errorf("%w on %s: is sluice run running for this source, and connected to this NATS? (a login without permissions backfill or admin in nats.users sees no responder either: pass such a login with --user, or run this on sluice's host as its user, where the local admin login is read from nats.store_dir)", ErrNoSluice, subject)
	case errors.Is(err, nats.ErrPermissionViolation) || err != nil && strings.Contains(strings.ToLower(err.Error()), "permissions violation"):
		return Reply{}, fmt.Errorf("ask %s: %w: this login may not use sluice's control subjects; use a login with permissions backfill or admin (nats.users), or run the command on sluice's host, where it reads the local admin login from nats.store_dir", subject, err)
	case err != nil:
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
