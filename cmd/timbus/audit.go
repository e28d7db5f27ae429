package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/timbus-dev/timbus/deciders/catalog"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// auditOutcomes are the outcomes an audit record can hold (see
// protocol.AuditRecord), for checking --outcome.
var auditOutcomes = func() []string {
	var names []string
	for _, o := range protocol.AuditOutcomes() {
		names = append(names, string(o))
	}
	return names
}()

// timeLayout is RFC 3339 with milliseconds, the table's TIME column.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// reasonWidth bounds the REASON and DETAIL cells.
const reasonWidth = detailWidth

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("timbus audit")
	natsURL := fs.String("nats-url", "", "")
	natsAuth := addNATSAuthFlags(fs)
	stream := fs.String("stream", "", "")
	prefix := fs.String("subject-prefix", protocol.DefaultSubjectPrefix, "")
	since := fs.String("since", "", "")
	follow := fs.Bool("follow", false, "")
	asJSON := fs.Bool("json", false, "")
	limit := fs.Int("limit", 0, "")
	var sel recordSelection
	fs.BoolVar(&sel.disagreements, "disagreements", false, "")
	fs.Func("sdkappid", "", listFlag(&sel.apps))
	fs.Func("command", "", listFlag(&sel.commands))
	var outcomes []string
	fs.Func("outcome", "", listFlag(&outcomes))
	if code, ok := parseArgs(fs, args, stdout, stderr, printAuditHelp); !ok {
		return code
	}
	prefixSet := false
	fs.Visit(func(f *flag.Flag) { prefixSet = prefixSet || f.Name == "subject-prefix" })
	err := sel.check(*prefix, outcomes, *limit)
	if err == nil && *since != "" {
		if *stream == "" {
			err = errors.New("--since needs --stream: live records are all new")
		} else {
			sel.since, err = parseSince(*since, time.Now())
		}
	}
	if err != nil {
		usageError(stderr, fs.Name(), err)
		return exitUsage
	}
	sel.limit = *limit
	url := resolveNATSURL(*natsURL)

	// Ctrl-C ends --follow and the live view: the normal way out.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	stderr = &lockedWriter{w: stderr} // NATS reports slow consumers from its own goroutine
	authOpts, err := natsAuth.resolve(url)
	if err != nil {
		usageError(stderr, fs.Name(), err)
		return exitUsage
	}
	nc, err := nats.Connect(url, append(authOpts, nats.Name("timbus audit"), nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil {
			fmt.Fprintf(stderr, "timbus audit: warning: %s: %v (records were dropped)\n", sub.Subject, err)
		}
	}))...)
	if err != nil {
		fmt.Fprintf(stderr, "timbus audit: %s\n", natsAuth.connectError(url, err))
		return exitFailure
	}
	defer nc.Close()

	out := newAuditOutput(stdout, *asJSON, *follow || *stream == "", sel.disagreements)
	shown, bad := 0, 0
	each := func(data []byte) (bool, error) {
		var rec protocol.AuditRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			bad++
			if bad == 1 {
				fmt.Fprintf(stderr, "timbus audit: skipping a message that is not an audit record: %v\n", err)
			}
			return true, nil
		}
		if !sel.matches(&rec) {
			return true, nil
		}
		if err := out.record(data, &rec); err != nil {
			return false, err
		}
		shown++
		return sel.limit == 0 || shown < sel.limit, nil
	}

	if *stream == "" {
		err = out.start()
		if err == nil {
			err = readLive(ctx, nc, sel.subjects(*prefix, sel.wantsRefusals()), each)
		}
	} else {
		var src *streamSource
		src, err = openStream(ctx, nc, *stream)
		if err == nil {
			if !prefixSet {
				*prefix = src.prefix()
			}
			err = out.start()
		}
		if err == nil {
			err = src.read(ctx, sel.subjects(*prefix, sel.wantsRefusals()), sel.since, *follow, each)
		}
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		err = nil // Ctrl-C, or the caller's end
	}
	// An empty table is printed as its header, unless nothing could be read.
	if err == nil || shown > 0 {
		if ferr := out.flush(); err == nil {
			err = ferr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "timbus audit: %v\n", err)
		return exitFailure
	}
	if bad > 1 {
		fmt.Fprintf(stderr, "timbus audit: %d messages skipped: not audit records\n", bad)
	}
	if shown == 0 && !*asJSON {
		fmt.Fprintln(stderr, "timbus audit: no records matched")
	}
	return exitOK
}

func printAuditHelp(w io.Writer) {
	fmt.Fprintf(w, `Usage: timbus audit [--nats-url URL] [--stream NAME] [--subject-prefix P]
                    [--sdkappid ID] [--command C] [--outcome O] [--since D]
                    [--disagreements] [--follow] [--json] [--limit N]

Shows the audit records timbus serve publishes, one per callback it handled or
refused: when it came, the app and command, what became of it (the outcome),
the ErrorCode Tencent got, how long it took, the decider that answered, the
request id and, for a default verdict or a refusal, why.

With --stream, the records are read from that JetStream stream (the one given
to timbus serve --audit-stream), oldest first, until the end of the stream;
with --follow, new records are then printed as they come, until Ctrl-C.
Without --stream, nothing stored is read: timbus audit subscribes to the audit
subjects and prints records as the bridge publishes them, until Ctrl-C (as if
--follow were given; --since does not apply).

Flags:
  --nats-url URL[,URL...]  NATS servers (default $%s, else
                           %s)
`+natsAuthHelp+`  --stream NAME            JetStream stream holding the records
  --subject-prefix P       subject prefix, as given to timbus serve (default:
                           with --stream, the prefix the stream captures
                           <P>.audit.> for; otherwise %q)
  --sdkappid ID[,ID...]    only these apps
  --command C[,C...]       only these callback commands
  --outcome O[,O...]       only these outcomes: decided, timeout, no_deciders,
                           invalid_reply, decider_error, nats_error, shed,
                           circuit_open, published, rejected, late
  --since D                only records received in the last D (e.g. 10m,
                           2h), or since an RFC 3339 time
                           (2026-01-02T15:04:05Z); needs --stream
  --disagreements          only callbacks a shadow decider (timbus serve
                           --shadow-prefix) answered with another ErrorCode
                           than Tencent got; the table then shows the shadow's
                           outcome and code in a SHADOW column
  --follow                 with --stream, keep printing new records until Ctrl-C
  --json                   print the records as stored, one JSON object per
                           line, instead of a table (a record whose stored form
                           spans lines, e.g. with a pretty-printed callback
                           body, is compacted onto one)
  --limit N                stop after N records (default 0: no limit)

Refused requests are recorded under <P>.audit.rejected.<reason>, with the
SdkAppid and command the request named, if any; --sdkappid and --command
select them too.

Exit status: 0 when the records were shown (also when none matched, and when
Ctrl-C stopped it), 1 when NATS or the stream failed (e.g. no such stream), 2
for a usage error.
`, envName("nats-url"), nats.DefaultURL, protocol.DefaultSubjectPrefix)
}

// resolveNATSURL applies the environment and the default to --nats-url.
func resolveNATSURL(flagValue string) string {
	if flagValue == "" {
		flagValue = os.Getenv(envName("nats-url"))
	}
	if url := strings.Join(splitList(flagValue), ","); url != "" {
		return url
	}
	return nats.DefaultURL
}

// listFlag collects a repeatable, comma-separated flag.
func listFlag(dst *[]string) func(string) error {
	return func(v string) error {
		for _, item := range splitList(v) {
			if !slices.Contains(*dst, item) {
				*dst = append(*dst, item)
			}
		}
		return nil
	}
}

// parseSince reads --since: a duration back from now, or a point in time.
func parseSince(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("--since %s: want a positive duration", v)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration (10m, 2h) or an RFC 3339 time (2026-01-02T15:04:05Z)", v)
}

// recordSelection chooses audit records: by subject where it can, and by
// the record's own fields in every case.
type recordSelection struct {
	apps, commands []string
	outcomes       map[string]bool // nil: any
	since          time.Time       // zero: any
	disagreements  bool            // only records whose shadow disagrees
	limit          int             // 0: no limit
}

// check validates the selection's flags.
func (s *recordSelection) check(prefix string, outcomes []string, limit int) error {
	if !protocol.ValidPrefix(prefix) {
		return fmt.Errorf("--subject-prefix %q: want dot-separated tokens without spaces or wildcards", prefix)
	}
	for _, app := range s.apps {
		if _, err := strconv.ParseUint(app, 10, 64); err != nil {
			return fmt.Errorf("--sdkappid %q: an SdkAppid is a decimal number", app)
		}
	}
	for _, c := range s.commands {
		if !catalog.ValidName(c) {
			return fmt.Errorf("--command %q: a callback command looks like Group.CallbackBeforeSendMsg", c)
		}
	}
	for _, o := range outcomes {
		if !slices.Contains(auditOutcomes, o) {
			return fmt.Errorf("--outcome %q: want one of %s", o, strings.Join(auditOutcomes, ", "))
		}
		if s.outcomes == nil {
			s.outcomes = map[string]bool{}
		}
		s.outcomes[o] = true
	}
	if limit < 0 {
		return fmt.Errorf("--limit %d: want 0 (no limit) or more", limit)
	}
	return nil
}

// subjects returns the subjects holding the selected records under prefix.
// Refusals are recorded under <prefix>.audit.rejected.<reason>, outside the
// app and command tokens: with refusals, those subjects are read too and the
// records' own fields decide. (rejected.* has fewer tokens than any
// <SdkAppid>.<Family>.<Command>, so the subjects never overlap, which
// JetStream would refuse.)
func (s *recordSelection) subjects(prefix string, refusals bool) []string {
	base := prefix + "." + protocol.KindAudit + "."
	if len(s.apps) == 0 && len(s.commands) == 0 {
		return []string{base + ">"}
	}
	var out []string
	switch {
	case len(s.commands) == 0:
		for _, app := range s.apps {
			out = append(out, base+app+".>")
		}
	case len(s.apps) == 0:
		for _, c := range s.commands {
			out = append(out, base+"*."+c)
		}
	default:
		for _, app := range s.apps {
			for _, c := range s.commands {
				out = append(out, base+app+"."+c)
			}
		}
	}
	if refusals {
		out = append(out, base+protocol.RejectedToken+".*")
	}
	return out
}

// wantsRefusals reports whether records of refused requests may be selected.
func (s *recordSelection) wantsRefusals() bool {
	return s.outcomes == nil || s.outcomes["rejected"]
}

// matches reports whether rec is selected.
func (s *recordSelection) matches(rec *protocol.AuditRecord) bool {
	switch {
	case len(s.apps) > 0 && !slices.Contains(s.apps, rec.SdkAppID),
		len(s.commands) > 0 && !slices.Contains(s.commands, rec.Command),
		s.outcomes != nil && !s.outcomes[rec.Outcome],
		!s.since.IsZero() && rec.ReceivedAt.Before(s.since),
		s.disagreements && (rec.Agrees == nil || *rec.Agrees):
		return false
	}
	return true
}

// lockedWriter serializes writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// streamSource reads audit records from a JetStream stream.
type streamSource struct {
	js   jetstream.JetStream
	name string
	info *jetstream.StreamInfo // as the stream was when opened
	url  string                // the server, redacted, for messages
}

// openStream finds the stream, with errors that say what to do.
func openStream(ctx context.Context, nc *nats.Conn, name string) (*streamSource, error) {
	url := nc.ConnectedUrlRedacted()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("JetStream on %s: %w", url, err)
	}
	lookup, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(lookup, name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("stream %q not found on %s: check the name (timbus serve --audit-stream %s creates it)", name, url, name)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, nats.ErrNoResponders): // nothing answers the JetStream API
		return nil, fmt.Errorf("JetStream is not enabled on %s, so it holds no stream %q", url, name)
	case errors.Is(err, jetstream.ErrInvalidStreamName):
		return nil, fmt.Errorf("%q is not a stream name", name)
	case err != nil:
		return nil, fmt.Errorf("stream %q on %s: %w", name, url, err)
	}
	return &streamSource{js: js, name: name, info: s.CachedInfo(), url: url}, nil
}

// prefix is the subject prefix whose audit records the stream captures: P
// for a stream on "P.audit.>", else the default.
func (s *streamSource) prefix() string {
	found := ""
	for _, subject := range s.info.Config.Subjects {
		p, ok := strings.CutSuffix(subject, "."+protocol.KindAudit+".>")
		if !ok || !protocol.ValidPrefix(p) {
			continue
		}
		if found != "" {
			return protocol.DefaultSubjectPrefix // ambiguous
		}
		found = p
	}
	if found == "" {
		return protocol.DefaultSubjectPrefix
	}
	return found
}

// idleCheck is how long a read without --follow waits for a message before
// asking the server whether any is still to come.
const idleCheck = 2 * time.Second

// read hands the messages stored on subjects to each, oldest first, and
// when since is set only those stored since then. It stops at the end of the stream as it was when opened, or, with
// follow, when ctx ends. each returns false to stop.
func (s *streamSource) read(ctx context.Context, subjects []string, since time.Time, follow bool, each func([]byte) (bool, error)) error {
	// A consumer left behind (the process killed) goes after a minute.
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, MaxResetAttempts: 5, InactiveThreshold: time.Minute}
	if !since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	create, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := s.js.OrderedConsumer(create, s.name, cfg)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("cannot read stream %q (it captures %s) for %s: %w",
			s.name, strings.Join(s.info.Config.Subjects, ", "), strings.Join(subjects, ", "), err)
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.js.DeleteConsumer(ctx, s.name, info.Name)
			cancel()
		}
	}()
	last := s.info.State.LastSeq
	if info := cons.CachedInfo(); !follow && (info == nil || info.NumPending == 0) {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("stream %q: %w", s.name, err)
	}
	defer it.Stop()
	for {
		next, cancel := ctx, context.CancelFunc(func() {})
		if !follow {
			next, cancel = context.WithTimeout(ctx, idleCheck)
		}
		msg, err := it.Next(jetstream.NextContext(next))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !follow && errors.Is(err, context.DeadlineExceeded) {
				// Slow, or the rest of the stream expired meanwhile.
				info, ierr := cons.Info(ctx)
				if ierr != nil {
					return fmt.Errorf("stream %q: %w", s.name, ierr)
				}
				if info.NumPending == 0 {
					return nil
				}
				continue
			}
			return fmt.Errorf("stream %q: %w", s.name, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("stream %q: %w", s.name, err)
		}
		if !follow && md.Sequence.Stream > last {
			return nil // stored after we started: not part of this read
		}
		more, err := eachRecord(msg.Data(), each)
		if err != nil || !more {
			return err
		}
		if !follow && (md.NumPending == 0 || md.Sequence.Stream == last) {
			return nil
		}
	}
}

// eachRecord hands each record of an audit message to each: a message holds
// one, or a batch (protocol.EachRecord).
func eachRecord(data []byte, each func([]byte) (bool, error)) (more bool, err error) {
	more = true
	protocol.EachRecord(data, func(record []byte) bool {
		more, err = each(record)
		return more && err == nil
	})
	return more, err
}

// liveBuffer bounds the records waiting to be printed in the live view;
// beyond it NATS drops records and reports a slow consumer.
const liveBuffer = 8192

// readLive subscribes to subjects and hands each record published there to
// each, until ctx ends or each returns false.
func readLive(ctx context.Context, nc *nats.Conn, subjects []string, each func([]byte) (bool, error)) error {
	ch := make(chan *nats.Msg, liveBuffer)
	for _, subject := range subjects {
		sub, err := nc.ChanSubscribe(subject, ch)
		if err != nil {
			return fmt.Errorf("subscribe to %s: %w", subject, err)
		}
		defer sub.Unsubscribe()
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("subscribe to %s: %w", strings.Join(subjects, ", "), err)
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return fmt.Errorf("connection to NATS closed: %v", nc.LastError())
		case m := <-ch:
			more, err := eachRecord(m.Data, each)
			if err != nil || !more {
				return err
			}
		}
	}
}

// auditOutput prints records as a table or as JSON lines.
type auditOutput struct {
	w      io.Writer
	json   bool
	shadow bool // the table has a SHADOW column
	table  *table
}

func newAuditOutput(w io.Writer, asJSON, streaming, shadow bool) *auditOutput {
	o := &auditOutput{w: w, json: asJSON, shadow: shadow}
	if asJSON {
		return o
	}
	header := []string{"TIME", "SDKAPPID", "COMMAND", "OUTCOME", "CODE", "LATENCY", "DECIDER", "REQUEST ID", "REASON"}
	// The widths rows usually need, so that lines printed as they come
	// stay aligned.
	widths := []int{len(timeLayout), 10, 40, 13, 6, 9, 12, 16}
	if shadow {
		header = slices.Insert(header, 5, "SHADOW")
		widths = slices.Insert(widths, 5, 16)
	}
	o.table = newTable(w, streaming, header...)
	if streaming {
		o.table.widths = widths
	}
	return o
}

// start prints the header of a table whose rows come as records do, so that
// a quiet stream shows it is being watched.
func (o *auditOutput) start() error {
	if o.table == nil || o.table.batch > 1 {
		return nil
	}
	return o.table.flush()
}

func (o *auditOutput) record(data []byte, rec *protocol.AuditRecord) error {
	if o.json {
		line := oneLine(data)
		_, err := o.w.Write(append(line[:len(line):len(line)], '\n')) // never into the message's buffer
		return err
	}
	cells := []string{
		rec.ReceivedAt.Local().Format(timeLayout),
		rec.SdkAppID,
		rec.Command,
		rec.Outcome,
		strconv.Itoa(rec.Code),
		formatMS(rec.LatencyMS),
		shorten(rec.Decider, 40),
		rec.RequestID,
		shorten(truncationNote(rec)+rec.Reason, reasonWidth),
	}
	if o.shadow {
		shadow := rec.ShadowOutcome
		if rec.ShadowCode != nil {
			shadow += " " + strconv.Itoa(*rec.ShadowCode)
		}
		cells = slices.Insert(cells, 5, strings.TrimSpace(shadow))
	}
	return o.table.row(cells...)
}

// truncationNote names the fields timbus cut to fit the record in NATS's
// max_payload or in their own bounds, ahead of the reason, e.g.
// "[cut: body, client_ip] ".
func truncationNote(rec *protocol.AuditRecord) string {
	if len(rec.Truncated) == 0 {
		return ""
	}
	return "[cut: " + strings.Join(slices.Sorted(maps.Keys(rec.Truncated)), ", ") + "] "
}

func (o *auditOutput) flush() error {
	if o.table == nil {
		return nil
	}
	return o.table.flush()
}

// oneLine returns a stored record as it is, unless it spans lines (the
// bridge stores Tencent's body and a decider's reply byte for byte, and
// either may be pretty-printed): then its insignificant white space goes.
func oneLine(data []byte) []byte {
	if !bytes.ContainsAny(data, "\r\n") {
		return data
	}
	var b bytes.Buffer
	if err := json.Compact(&b, data); err != nil {
		return bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r"), []byte(" ")), []byte("\n"), []byte(" "))
	}
	return b.Bytes()
}

func formatMS(ms float64) string {
	return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
}

// tableBatch is how many rows a table holds before printing them: columns
// are as wide as the widest cell seen so far, and only grow.
const tableBatch = 256

// table prints aligned columns separated by two spaces, with "-" for empty
// cells and every cell on one line. A streaming table prints each row at
// once; otherwise rows are printed in batches, aligned within and after.
type table struct {
	w       io.Writer
	widths  []int
	pending [][]string
	batch   int
}

func newTable(w io.Writer, streaming bool, header ...string) *table {
	t := &table{w: w, batch: tableBatch}
	if streaming {
		t.batch = 1
	}
	t.pending = append(t.pending, header)
	return t
}

func (t *table) row(cells ...string) error {
	for i, c := range cells {
		cells[i] = orDash(cleanCell(c))
	}
	t.pending = append(t.pending, cells)
	if len(t.pending) >= t.batch {
		return t.flush()
	}
	return nil
}

func (t *table) flush() error {
	for _, cells := range t.pending {
		for i, c := range cells[:len(cells)-1] { // the last column is not padded
			if i >= len(t.widths) {
				t.widths = append(t.widths, 0)
			}
			t.widths[i] = max(t.widths[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	for _, cells := range t.pending {
		for i, c := range cells {
			b.WriteString(c)
			if i < len(cells)-1 {
				b.WriteString(strings.Repeat(" ", t.widths[i]-len([]rune(c))+2))
			}
		}
		b.WriteByte('\n')
	}
	t.pending = t.pending[:0]
	_, err := io.WriteString(t.w, b.String())
	return err
}
