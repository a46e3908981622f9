package sink

import (
	"fmt"
	"strconv"
	"strings"
)

// The embedded server's accounts. Every login lives in exactly one of them,
// and what a login can reach is what its account imports: NATS routes
// messages between accounts only along the exports and imports below, so
// nothing here filters messages by hand.
//
//   - AccountEvents holds the event streams, and nothing else: sluice's
//     publisher connects here (Server.Connect). Consumers that read logins
//     create through their imports live in this account, and a push
//     consumer delivers into this account's subjects, where nothing but the
//     streams and the JetStream API listens: it cannot reach a bucket or a
//     control subject, which live in AccountState.
//   - AccountState holds the checkpoint bucket and the control subjects
//     (_SLUICE.<source>.>): sluice's own state connection
//     (Server.ConnectControl) and every admin login live here. Admins reach
//     the event streams' JetStream API under EventsAPIPrefix and see the
//     event subjects through a stream import.
//   - Every read or backfill login, and the anonymous login, has an account
//     of its own without JetStream, importing only this source's event
//     subjects and the JetStream API subjects scoped to the event stream
//     (backfill logins also the control subjects).
const (
	AccountState  = "SLUICE"
	AccountEvents = "SLUICE_EVENTS"
	// EventsAPIPrefix is the JetStream API prefix under which an admin
	// login (in AccountState) manages the event streams:
	// jetstream.NewWithAPIPrefix(nc, sink.EventsAPIPrefix). Read and
	// backfill logins can use it too, or plain jetstream.New(nc).
	EventsAPIPrefix = "$JS.EVENTS.API"
)

// DefaultMaxConsumers caps the consumers of the events account (all its
// streams, all logins) when ServerConfig.MaxConsumers is 0.
const DefaultMaxConsumers = 10000

// readServices are the JetStream API subjects, scoped to one stream, that
// a read login needs for jetstream.New(nc): stream names and info, getting a message,
// creating a consumer and reading its info, pulling, acking and unpinning
// (consumer groups). There is no
// delete, no update of the stream, no listing of the consumers.
func readServices(stream string) []service {
	return []service{
		{subject: "$JS.API.INFO"},
		// Stream names only (tools find the stream of a subject with it);
		// every other stream call is scoped to this stream.
		{subject: "$JS.API.STREAM.NAMES"},
		{subject: "$JS.API.STREAM.INFO." + stream},
		{subject: "$JS.API.STREAM.MSG.GET." + stream},
		{subject: "$JS.API.DIRECT.GET." + stream, streamed: true},
		{subject: "$JS.API.DIRECT.GET." + stream + ".>", streamed: true},
		{subject: "$JS.API.CONSUMER.CREATE." + stream},
		{subject: "$JS.API.CONSUMER.CREATE." + stream + ".>"},
		{subject: "$JS.API.CONSUMER.DURABLE.CREATE." + stream + ".*"},
		{subject: "$JS.API.CONSUMER.INFO." + stream + ".*"},
		{subject: "$JS.API.CONSUMER.MSG.NEXT." + stream + ".*", streamed: true},
		// A consumer group member hands a partition to another member by
		// unpinning its consumer (sink/consumer RunGroup).
		{subject: "$JS.API.CONSUMER.UNPIN." + stream + ".*"},
		{subject: "$JS.ACK." + stream + ".>"},
	}
}

type service struct {
	subject  string
	streamed bool // more than one response per request (pull, batch get)
}

// login is one user or nkey and the account it lives in.
type login struct {
	user    User
	account string
}

// layout is the account configuration of one server.
type layout struct {
	readAccounts     []string // accounts importing the event subjects and read API
	backfillAccounts []string // subset of readAccounts that also import control
}

// accountsConf renders the accounts block in NATS configuration syntax.
// It holds only names and subjects this package derives and checks (never a
// password: logins are added to the options afterwards).
func accountsConf(cfg ServerConfig, l layout) string {
	q := strconv.Quote
	list := func(names []string) string {
		var qs []string
		for _, n := range names {
			qs = append(qs, q(n))
		}
		return "[" + strings.Join(qs, ", ") + "]"
	}
	maxConsumers := cfg.MaxConsumers
	if maxConsumers == 0 {
		maxConsumers = DefaultMaxConsumers
	}
	scoped := cfg.Source != "" && cfg.Stream != "" && cfg.Prefix != ""
	var b strings.Builder
	b.WriteString("accounts {\n")

	// The events account.
	// max_file bounds the events' storage (nats.max_store): past it a
	// publish is refused, and sluice waits with its position kept.
	maxFile := ""
	if cfg.MaxStore > 0 {
		maxFile = fmt.Sprintf(", max_file: %d", cfg.MaxStore)
	}
	fmt.Fprintf(&b, "  %s: {\n    jetstream: {max_consumers: %d%s}\n    exports: [\n", q(AccountEvents), maxConsumers, maxFile)
	fmt.Fprintf(&b, "      {service: %s, response_type: stream, accounts: %s}\n", q("$JS.API.>"), list([]string{AccountState}))
	fmt.Fprintf(&b, "      {service: %s, accounts: %s}\n", q("$JS.ACK.>"), list([]string{AccountState}))
	if cfg.Prefix != "" {
		fmt.Fprintf(&b, "      {stream: %s, accounts: %s}\n", q(cfg.Prefix+".>"), list([]string{AccountState}))
	}
	if scoped && len(l.readAccounts) > 0 {
		fmt.Fprintf(&b, "      {stream: %s, accounts: %s}\n", q(cfg.Prefix+"."+cfg.Source+".>"), list(l.readAccounts))
		for _, s := range readServices(cfg.Stream) {
			rt := ""
			if s.streamed {
				rt = ", response_type: stream"
			}
			fmt.Fprintf(&b, "      {service: %s%s, accounts: %s}\n", q(s.subject), rt, list(l.readAccounts))
		}
	}
	b.WriteString("    ]\n  }\n")

	// The state account.
	fmt.Fprintf(&b, "  %s: {\n    jetstream: enabled\n    exports: [\n", q(AccountState))
	if scoped && len(l.backfillAccounts) > 0 {
		fmt.Fprintf(&b, "      {service: %s, accounts: %s}\n", q(controlSubjects(cfg.Source)), list(l.backfillAccounts))
	}
	b.WriteString("    ]\n    imports: [\n")
	fmt.Fprintf(&b, "      {service: {account: %s, subject: %s}, to: %s}\n", q(AccountEvents), q("$JS.API.>"), q(EventsAPIPrefix+".>"))
	fmt.Fprintf(&b, "      {service: {account: %s, subject: %s}}\n", q(AccountEvents), q("$JS.ACK.>"))
	if cfg.Prefix != "" {
		fmt.Fprintf(&b, "      {stream: {account: %s, subject: %s}}\n", q(AccountEvents), q(cfg.Prefix+".>"))
	}
	b.WriteString("    ]\n  }\n")

	// One account per read or backfill login, and the anonymous one.
	backfill := map[string]bool{}
	for _, a := range l.backfillAccounts {
		backfill[a] = true
	}
	for _, a := range l.readAccounts {
		fmt.Fprintf(&b, "  %s: {\n    imports: [\n", q(a))
		if scoped {
			fmt.Fprintf(&b, "      {stream: {account: %s, subject: %s}}\n", q(AccountEvents), q(cfg.Prefix+"."+cfg.Source+".>"))
			for _, s := range readServices(cfg.Stream) {
				fmt.Fprintf(&b, "      {service: {account: %s, subject: %s}}\n", q(AccountEvents), q(s.subject))
				// The same API under the admins' prefix, so that a tool can
				// use one prefix whatever its login.
				if rest, ok := strings.CutPrefix(s.subject, "$JS.API."); ok {
					fmt.Fprintf(&b, "      {service: {account: %s, subject: %s}, to: %s}\n", q(AccountEvents), q(s.subject), q(EventsAPIPrefix+"."+rest))
				}
			}
			if backfill[a] {
				fmt.Fprintf(&b, "      {service: {account: %s, subject: %s}}\n", q(AccountState), q(controlSubjects(cfg.Source)))
			}
		}
		b.WriteString("    ]\n  }\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// controlSubjects are a source's control subjects (backfill requests, job
// queries): see backfill.StartSubject.
func controlSubjects(source string) string { return "_SLUICE." + source + ".>" }

// loginAccount names the account of the i-th configured read or backfill
// login. Names carry the server name: in a cluster, an account is one
// interest space across every member, and two members' logins must not
// share one.
func loginAccount(kind string, i int, serverName string) string {
	return "SLUICE_" + strings.ToUpper(kind) + "_" + strconv.Itoa(i+1) + nameSuffix(serverName)
}

func anonAccount(serverName string) string { return "SLUICE_ANONYMOUS" + nameSuffix(serverName) }

func nameSuffix(serverName string) string {
	if serverName == "" {
		return ""
	}
	b := []byte(serverName)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return "_" + string(b)
}

// checkToken refuses a name that cannot be one subject token (or, with
// dots, a subject prefix) without wildcards, spaces or quotes.
func checkToken(setting, v string, dots bool) error {
	if v == "" {
		return nil
	}
	for _, r := range v {
		if r <= ' ' || r == 0x7f || r == '*' || r == '>' || r == '"' || r == '\\' || (r == '.' && !dots) {
			return fmt.Errorf("%s %q: use letters, digits, - and _ only", setting, v)
		}
	}
	if dots && (strings.HasPrefix(v, ".") || strings.HasSuffix(v, ".") || strings.Contains(v, "..")) {
		return fmt.Errorf("%s %q is not a subject prefix", setting, v)
	}
	return nil
}
