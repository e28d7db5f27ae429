package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/bridge"
	"github.com/timbus-dev/timbus/deciders/catalog"
	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/ask"
)

// replayOutcomes are the recorded outcomes of before callbacks that were
// due a decider's verdict, the ones worth asking again. They include the
// callbacks answered with the default without asking (shed over
// max-inflight, or the command's breaker open): what the deciders would have
// said is exactly what such a record lacks. Not replayed: published (after
// callbacks, and before callbacks sent fire-and-forget), rejected (refused
// before any verdict was due) and late (a second record of a callback
// already recorded).
var replayOutcomes = map[string]bool{
	string(protocol.OutcomeDecided): true, string(protocol.OutcomeTimeout): true,
	string(protocol.OutcomeNoDeciders): true, string(protocol.OutcomeInvalidReply): true,
	string(protocol.OutcomeDeciderError): true, string(protocol.OutcomeNATSError): true,
	string(protocol.OutcomeShed): true, string(protocol.OutcomeCircuitOpen): true,
}

// replayIDPrefix marks the request ids of replayed callbacks.
const replayIDPrefix = "replay-"

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("timbus replay")
	natsURL := fs.String("nats-url", "", "")
	natsAuth := addNATSAuthFlags(fs)
	stream := fs.String("stream", "", "")
	prefix := fs.String("subject-prefix", protocol.DefaultSubjectPrefix, "")
	since := fs.String("since", "", "")
	timeout := fs.Duration("timeout", bridge.DefaultConfig().Timeout, "")
	asJSON := fs.Bool("json", false, "")
	limit := fs.Int("limit", 0, "")
	var sel recordSelection
	fs.Func("sdkappid", "", listFlag(&sel.apps))
	fs.Func("command", "", listFlag(&sel.commands))
	if code, ok := parseArgs(fs, args, stdout, stderr, printReplayHelp); !ok {
		return code
	}
	err := checkReplayArgs(&sel, *stream, *prefix, *since, *timeout, *limit)
	if err != nil {
		usageError(stderr, fs.Name(), err)
		return exitUsage
	}
	url := resolveNATSURL(*natsURL)

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	authOpts, err := natsAuth.resolve(url)
	if err != nil {
		usageError(stderr, fs.Name(), err)
		return exitUsage
	}
	nc, err := nats.Connect(url, append(authOpts, nats.Name("timbus replay"))...)
	if err != nil {
		fmt.Fprintf(stderr, "timbus replay: %s\n", natsAuth.connectError(url, err))
		return exitFailure
	}
	defer nc.Close()
	src, err := openStream(ctx, nc, *stream)
	if err != nil {
		fmt.Fprintf(stderr, "timbus replay: %v\n", err)
		return exitFailure
	}

	r := &replayer{nc: nc, prefix: *prefix, timeout: *timeout}
	out := newReplayOutput(stdout, *asJSON)
	var sum replaySummary
	each := func(data []byte) (bool, error) {
		var rec protocol.AuditRecord
		if err := json.Unmarshal(data, &rec); err != nil || !sel.matches(&rec) {
			return true, nil
		}
		if !replayable(&rec) {
			sum.skipped++
			return true, nil
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
		row, err := r.replay(&rec)
		if err != nil {
			return false, err
		}
		sum.add(row)
		if err := out.row(row); err != nil {
			return false, err
		}
		return sel.limit == 0 || sum.replayed < sel.limit, nil
	}
	// The records are those of the stream's own prefix, whatever prefix
	// the deciders are asked under now.
	err = src.read(ctx, sel.subjects(src.prefix(), false), sel.since, false, each)
	if ferr := out.finish(sum); err == nil {
		err = ferr
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			err = errors.New("stopped before the end of the stream")
		}
		fmt.Fprintf(stderr, "timbus replay: %v\n", err)
		return exitFailure
	}
	if sum.replayed > 0 && !sum.answered {
		fmt.Fprintf(stderr, "No decider answered any callback. Is one running, connected to %s, and subscribed to subjects under %s (see --subject-prefix)?\n",
			nc.ConnectedUrlRedacted(), *prefix+"."+protocol.KindDecide)
	}
	return exitOK
}

func printReplayHelp(w io.Writer) {
	fmt.Fprintf(w, `Usage: timbus replay --stream NAME [--nats-url URL] [--since D]
                     [--command C] [--sdkappid ID] [--subject-prefix P]
                     [--timeout D] [--json] [--limit N]

Replays recorded callbacks to the deciders listening now, to show what they
would decide differently: a new decider version, or new rules, against real
traffic before they go live.

It reads the audit records of before callbacks from the JetStream stream NAME
(the one given to timbus serve --audit-stream), oldest first, and sends each
recorded body to <P>.decide.<SdkAppid>.<Command> with the headers the bridge
sets with --decide-headers all (deciders/PROTOCOL.md): the original SdkAppid,
command, client IP and platform, the request id "%s<original id>", and a
deadline --timeout from now. The reply is judged as the bridge judges it
(decided, or timeout, no_deciders, decider_error, invalid_reply) and compared
with the ErrorCode Tencent got then: SAME when Tencent would get the same
code, CHANGED otherwise. When no verdict comes now, the row is SAME only if
Tencent got a default then too. A summary counts the changes by recorded code
and new code (or outcome).

Nothing is sent to Tencent, and nothing is published on event or audit
subjects. The requests are real for the deciders, though: they act on them as
on any other (logging, counting, calling their backends), so let a new
version listen under another --subject-prefix, or make sure replaying is
harmless. Callbacks are replayed one at a time.

Replayed too: callbacks answered with the default without asking the
deciders (shed over --max-inflight, or the command's circuit breaker open),
so their rows show what the deciders would have said. Not replayed: after
callbacks, refused requests, before callbacks sent fire-and-forget, late
replies, and records without a body or whose body timbus cut to fit the
record (see "truncated" in the audit record).

Flags:
  --stream NAME            JetStream stream holding the audit records (required)
  --nats-url URL[,URL...]  NATS servers (default $%s, else
                           %s)
`+natsAuthHelp+`  --since D                only callbacks received in the last D (e.g. 10m,
                           2h), or since an RFC 3339 time
                           (2026-01-02T15:04:05Z)
  --command C[,C...]       only these callback commands
  --sdkappid ID[,ID...]    only these apps
  --subject-prefix P       prefix of the decide subjects the deciders listen
                           on now (default %q); the records are read
                           under the prefix the stream captures
  --timeout D              time the deciders have to answer, as timbus serve
                           --timeout; under Tencent's %v (default %v)
  --json                   print one JSON object per callback and a final
                           {"summary": ...} object instead of a table
  --limit N                stop after N replayed callbacks (default 0: all)

Exit status: 0 when the replay ran, whatever changed (it is a report), 1 when
NATS or the stream failed (e.g. no such stream), 2 for a usage error.
`, replayIDPrefix, envName("nats-url"), nats.DefaultURL, protocol.DefaultSubjectPrefix, bridge.TencentTimeout, bridge.DefaultConfig().Timeout)
}

func checkReplayArgs(sel *recordSelection, stream, prefix, since string, timeout time.Duration, limit int) error {
	if stream == "" {
		return errors.New("--stream is required: the JetStream stream holding the audit records (timbus serve --audit-stream)")
	}
	if err := sel.check(prefix, nil, limit); err != nil {
		return err
	}
	sel.limit = limit
	for _, name := range sel.commands {
		if c, ok := catalog.Lookup(name); ok && !c.Kind.NeedsReply() {
			return fmt.Errorf("--command %q: Tencent does not wait for a verdict on it, so there is nothing to replay", name)
		}
	}
	if timeout <= 0 || timeout >= bridge.TencentTimeout {
		return fmt.Errorf("--timeout %v: must be positive and under Tencent's own %v deadline, as for timbus serve", timeout, bridge.TencentTimeout)
	}
	if since != "" {
		var err error
		if sel.since, err = parseSince(since, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// replayable reports whether rec is a before callback a decider was asked
// about, with what it takes to ask again.
func replayable(rec *protocol.AuditRecord) bool {
	// A body cut to fit the record is not the callback any more.
	if !replayOutcomes[rec.Outcome] || rec.Kind == catalog.After.String() || len(rec.Body) == 0 || rec.Cut("body") ||
		!catalog.ValidName(rec.Command) || rec.RequestID == "" {
		return false
	}
	_, err := strconv.ParseUint(rec.SdkAppID, 10, 64)
	return err == nil
}

// replayer sends the recorded callbacks to the deciders.
type replayer struct {
	nc      *nats.Conn
	prefix  string
	timeout time.Duration
}

// replayRow is one replayed callback; its JSON form is the --json output.
type replayRow struct {
	RequestID  string          `json:"request_id"`
	ReceivedAt time.Time       `json:"received_at"`
	SdkAppID   string          `json:"sdkappid"`
	Command    string          `json:"command"`
	Recorded   recordedVerdict `json:"recorded"`
	Replayed   replayedVerdict `json:"replayed"`
	Agrees     bool            `json:"agrees"`
}

// recordedVerdict is what Tencent got then.
type recordedVerdict struct {
	Outcome string          `json:"outcome"`
	Code    int             `json:"code"`
	Answer  json.RawMessage `json:"answer,omitempty"`
}

// replayedVerdict is what the deciders answer now.
type replayedVerdict struct {
	Outcome   string          `json:"outcome"`
	Code      *int            `json:"code"`             // null without a verdict
	Answer    json.RawMessage `json:"answer,omitempty"` // the valid reply
	Decider   string          `json:"decider,omitempty"`
	LatencyMS float64         `json:"latency_ms"`
	Reason    string          `json:"reason,omitempty"`
	Subject   string          `json:"subject"`
}

const outcomeDecided = "decided"

// replay asks the deciders about rec again and judges the reply as the
// bridge does. An error means NATS is gone: the replay cannot go on.
func (r *replayer) replay(rec *protocol.AuditRecord) (replayRow, error) {
	row := replayRow{
		RequestID:  rec.RequestID,
		ReceivedAt: rec.ReceivedAt,
		SdkAppID:   rec.SdkAppID,
		Command:    rec.Command,
		Recorded:   recordedVerdict{Outcome: rec.Outcome, Code: rec.Code, Answer: rec.Answer},
	}
	if r.nc.IsClosed() {
		return row, errors.New("connection to NATS closed")
	}
	cmd, ok := catalog.Lookup(rec.Command)
	if !ok {
		cmd = catalog.Unlisted(rec.Command)
	}
	now := &row.Replayed
	now.Subject = protocol.Subject(r.prefix, protocol.KindDecide, rec.SdkAppID, rec.Command)
	start := time.Now()
	msg := &nats.Msg{
		Subject: now.Subject,
		Data:    rec.Body,
		Header: nats.Header(protocol.Request{
			ClientIP:    rec.ClientIP,
			OptPlatform: rec.OptPlatform,
		}.Header()),
	}
	reply, err := ask.RequestBy(r.nc, msg, start.Add(r.timeout), replayID(rec.RequestID))
	now.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		now.Outcome, now.Reason = "no_deciders", "no decider listening"
	case errors.Is(err, nats.ErrTimeout):
		now.Outcome, now.Reason = "timeout", "no reply within "+r.timeout.String()
	case errors.Is(err, nats.ErrConnectionClosed):
		return row, fmt.Errorf("request to %s: %w", now.Subject, err)
	case err != nil:
		now.Outcome, now.Reason = "nats_error", err.Error()
	default:
		r.judge(cmd, reply, now)
	}
	row.Agrees = agrees(row.Recorded, *now)
	return row, nil
}

// judge reads a reply as the bridge does.
func (r *replayer) judge(cmd *catalog.Command, reply *nats.Msg, now *replayedVerdict) {
	now.Decider = reply.Header.Get(protocol.HeaderDecider)
	outcome, errorCode, reason := judgeReply(cmd, reply)
	if outcome != protocol.OutcomeDecided {
		now.Outcome, now.Reason = string(outcome), reason
		return
	}
	now.Outcome, now.Code, now.Answer = outcomeDecided, &errorCode, reply.Data
}

// agrees compares the code Tencent got with the one it would get now. A
// callback without a verdict now would get the default: that agrees only
// with a default then, whatever the codes (the default may have changed).
func agrees(then recordedVerdict, now replayedVerdict) bool {
	if now.Outcome == outcomeDecided {
		return *now.Code == then.Code
	}
	return then.Outcome != outcomeDecided
}

// transition names a change for the summary: "0→120005", "0→no_deciders".
func transition(row replayRow) (from, to string) {
	to = row.Replayed.Outcome
	if row.Replayed.Code != nil {
		to = strconv.Itoa(*row.Replayed.Code)
	}
	return strconv.Itoa(row.Recorded.Code), to
}

// replaySummary counts the replayed callbacks.
type replaySummary struct {
	replayed, agree, changed int
	skipped                  int // records read but not replayable
	answered                 bool
	changes                  map[[2]string]int
}

func (s *replaySummary) add(row replayRow) {
	s.replayed++
	s.answered = s.answered || row.Replayed.Outcome != "no_deciders" && row.Replayed.Outcome != "timeout"
	if row.Agrees {
		s.agree++
		return
	}
	s.changed++
	if s.changes == nil {
		s.changes = map[[2]string]int{}
	}
	from, to := transition(row)
	s.changes[[2]string{from, to}]++
}

// changeCount is one kind of change and how often it happened.
type changeCount struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Count int    `json:"count"`
}

// sortedChanges lists the changes, most frequent first.
func (s *replaySummary) sortedChanges() []changeCount {
	out := make([]changeCount, 0, len(s.changes))
	for k, n := range s.changes {
		out = append(out, changeCount{From: k[0], To: k[1], Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		if out[i].From != out[j].From {
			return out[i].From < out[j].From
		}
		return out[i].To < out[j].To
	})
	return out
}

// replayOutput prints the rows as a table or as JSON lines.
type replayOutput struct {
	w     io.Writer
	enc   *json.Encoder // nil for the table
	table *table
}

func newReplayOutput(w io.Writer, asJSON bool) *replayOutput {
	o := &replayOutput{w: w}
	if asJSON {
		o.enc = json.NewEncoder(w)
		o.enc.SetEscapeHTML(false)
	} else {
		o.table = newTable(w, false, "TIME", "COMMAND", "RECORDED", "NOW", "RESULT", "REQUEST ID", "DETAIL")
	}
	return o
}

func (o *replayOutput) row(r replayRow) error {
	if o.enc != nil {
		return o.enc.Encode(r)
	}
	result := "CHANGED"
	if r.Agrees {
		result = "SAME"
	}
	recorded := r.Recorded.Outcome + " " + strconv.Itoa(r.Recorded.Code)
	now := r.Replayed.Outcome
	if r.Replayed.Code != nil {
		now += " " + strconv.Itoa(*r.Replayed.Code)
	}
	return o.table.row(r.ReceivedAt.Local().Format(timeLayout), r.Command, recorded, now, result, r.RequestID,
		shorten(r.Replayed.Reason, reasonWidth))
}

// finish prints the summary.
func (o *replayOutput) finish(s replaySummary) error {
	changes := s.sortedChanges()
	if o.enc != nil {
		type summary struct {
			Replayed int           `json:"replayed"`
			Agree    int           `json:"agree"`
			Changed  int           `json:"changed"`
			Skipped  int           `json:"skipped"`
			Changes  []changeCount `json:"changes"`
		}
		return o.enc.Encode(struct {
			Summary summary `json:"summary"`
		}{summary{s.replayed, s.agree, s.changed, s.skipped, changes}})
	}
	if err := o.table.flush(); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%d replayed, %d agree, %d changed\n", s.replayed, s.agree, s.changed)
	for _, c := range changes {
		fmt.Fprintf(&b, "  %s→%s: %d\n", c.From, c.To, c.Count)
	}
	if s.skipped > 0 {
		records := "records"
		if s.skipped == 1 {
			records = "record"
		}
		fmt.Fprintf(&b, "%d %s not replayed: after callbacks, refusals, fire-and-forget, late replies or without a body\n", s.skipped, records)
	}
	_, err := io.WriteString(o.w, b.String())
	return err
}

// replayID names a replayed request after the recorded one. A record is
// data from the audit stream: what cannot stand in a subject token becomes _.
func replayID(recorded string) string {
	id := []byte(replayIDPrefix + recorded)
	for i, c := range id {
		if c <= ' ' || c == '.' || c == '*' || c == '>' || c >= 0x7f {
			id[i] = '_'
		}
	}
	return string(id)
}
