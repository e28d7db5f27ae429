package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/bridge"
	"github.com/timbus-dev/timbus/deciders/catalog"
	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/ask"
	"github.com/timbus-dev/timbus/internal/samples"
)

// conformAppID is the SdkAppid conform puts in subjects and headers unless
// told otherwise: the one Tencent's documentation and PROTOCOL.md use.
const conformAppID = "1400000001"

// detailWidth bounds the replies and decider texts shown in the table.
const detailWidth = 60

// Results of one command.
const (
	resultPass = "PASS"
	resultFail = "FAIL"
	resultSkip = "SKIP"
)

// Where a request's body came from.
const (
	bodySample  = "sample"  // Tencent's documented body, from the catalog
	bodyMinimal = "minimal" // {"CallbackCommand": ...}: no sample is documented
)

func runConform(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("timbus conform")
	natsURL := fs.String("nats-url", "", "")
	natsAuth := addNATSAuthFlags(fs)
	appID := fs.String("sdkappid", conformAppID, "")
	prefix := fs.String("subject-prefix", protocol.DefaultSubjectPrefix, "")
	timeout := fs.Duration("timeout", bridge.DefaultConfig().Timeout, "")
	asJSON := fs.Bool("json", false, "")
	var named []string
	fs.Func("command", "", func(v string) error {
		named = append(named, splitList(v)...)
		return nil
	})
	if code, ok := parseArgs(fs, args, stdout, stderr, printConformHelp); !ok {
		return code
	}
	if *natsURL == "" {
		*natsURL = os.Getenv(envName("nats-url"))
	}
	*natsURL = strings.Join(splitList(*natsURL), ",")
	plan, err := checkConformArgs(*natsURL, *appID, *prefix, *timeout, named)
	if err != nil {
		usageError(stderr, fs.Name(), err)
		return exitUsage
	}

	authOpts, err := natsAuth.resolve(*natsURL)
	if err != nil {
		usageError(stderr, fs.Name(), err)
		return exitUsage
	}
	nc, err := nats.Connect(*natsURL, append(authOpts, nats.Name("timbus conform"))...)
	if err != nil {
		fmt.Fprintf(stderr, "timbus conform: %s\n", natsAuth.connectError(*natsURL, err))
		return exitFailure
	}
	defer nc.Close()

	c := conformer{nc: nc, appID: *appID, prefix: *prefix, timeout: *timeout}
	rows := make([]conformRow, 0, len(plan))
	for _, p := range plan {
		if err := ctx.Err(); err != nil {
			fmt.Fprintf(stderr, "timbus conform: stopped: %v\n", err)
			return exitFailure
		}
		rows = append(rows, c.check(p))
	}

	sum := summarize(rows)
	if *asJSON {
		// stdout holds only the JSON; the summary is for the people
		// reading a CI log.
		err = writeConformJSON(stdout, rows)
		sum.write(stderr, c, nc.ConnectedUrlRedacted())
	} else {
		err = writeConformTable(stdout, rows, sum, c, nc.ConnectedUrlRedacted())
	}
	if err != nil {
		fmt.Fprintf(stderr, "timbus conform: %v\n", err)
		return exitFailure
	}
	if sum.failed > 0 {
		return exitFailure
	}
	return exitOK
}

func printConformHelp(w io.Writer) {
	fmt.Fprintf(w, `Usage: timbus conform --nats-url URL [--sdkappid ID] [--command CMD ...]
                      [--subject-prefix P] [--timeout D] [--json]

Checks your deciders before you deploy them. For each command Tencent waits
on, it sends the deciders the NATS request timbus serve would send (the same
subject and headers, with Tencent's documented sample body as payload) and
judges the reply the way the bridge does (see deciders/PROTOCOL.md). A command
passes when a reply arrives within --timeout, carries no NATS services error
headers, and is a valid verdict for the command: its ErrorCode allowed and its
extra fields in Tencent's shape. "timbus commands" lists the rules.

By default every command Tencent waits on that has a documented sample is
checked, and the others are listed as skipped. A command named with --command
that has no documented sample is sent the minimal body
{"CallbackCommand":"<command>"}.

The requests are real: deciders act on them as on any other (logging,
counting, calling their backends). Point conform at a test SdkAppid or a
staging NATS if that matters.

Flags:
  --nats-url URL[,URL...]  NATS servers the deciders connect to (required; or
                           set %s)
`+natsAuthHelp+`  --sdkappid ID            SdkAppid in the subjects and headers (default %q)
  --command CMD[,CMD...]   command to check; repeat the flag or separate
                           commands with commas (default: see above)
  --subject-prefix P       subject prefix, as given to timbus serve
                           (default %q)
  --timeout D              time the deciders have to answer, as timbus serve
                           --timeout; under Tencent's %v (default %v)
  --json                   print a JSON array of the results instead of a
                           table; the summary then goes to stderr

Exit status: 0 when every command checked passed (skipped ones do not
count), 1 when any failed or NATS could not be reached, 2 for a usage error.
`, envName("nats-url"), conformAppID, protocol.DefaultSubjectPrefix, bridge.TencentTimeout, bridge.DefaultConfig().Timeout)
}

// conformPlan is one command to check; a nil body means there is no
// documented sample and the command is skipped.
type conformPlan struct {
	command *catalog.Command
	body    []byte
	source  string // bodySample or bodyMinimal; empty when skipped
}

// checkConformArgs validates the settings and returns the commands to check,
// in the order given, or in catalog order by default.
func checkConformArgs(natsURL, appID, prefix string, timeout time.Duration, named []string) ([]conformPlan, error) {
	if natsURL == "" {
		return nil, fmt.Errorf("--nats-url is required (or set %s): the NATS servers your deciders connect to", envName("nats-url"))
	}
	if _, err := strconv.ParseUint(appID, 10, 64); err != nil {
		return nil, fmt.Errorf("--sdkappid %q: an SdkAppid is a decimal number", appID)
	}
	if !protocol.ValidPrefix(prefix) {
		return nil, fmt.Errorf("--subject-prefix %q: want dot-separated tokens without spaces or wildcards", prefix)
	}
	if timeout <= 0 || timeout >= bridge.TencentTimeout {
		return nil, fmt.Errorf("--timeout %v: must be positive and under Tencent's own %v deadline, as for timbus serve", timeout, bridge.TencentTimeout)
	}

	if len(named) == 0 {
		var plan []conformPlan
		for _, c := range catalog.All() {
			if !c.Kind.NeedsReply() {
				continue
			}
			p := conformPlan{command: c}
			if body, ok := samples.Request(c.Name); ok {
				p.body, p.source = body, bodySample
			}
			plan = append(plan, p)
		}
		return plan, nil
	}

	plan := make([]conformPlan, 0, len(named))
	seen := map[string]bool{}
	for _, name := range named {
		if seen[name] {
			continue
		}
		seen[name] = true
		c, ok := catalog.Lookup(name)
		if !ok {
			return nil, fmt.Errorf("--command %q: not a Tencent callback command timbus knows; \"timbus commands\" lists them", name)
		}
		if !c.Kind.NeedsReply() {
			return nil, fmt.Errorf("--command %q: Tencent does not wait for a verdict on it (it is published as an event), so there is no reply to check", name)
		}
		p := conformPlan{command: c, source: bodySample}
		body, ok := samples.Request(name)
		if !ok {
			body, _ = json.Marshal(struct{ CallbackCommand string }{name})
			p.source = bodyMinimal
		}
		p.body = body
		plan = append(plan, p)
	}
	return plan, nil
}

// conformer sends the requests.
type conformer struct {
	nc      *nats.Conn
	appID   string
	prefix  string
	timeout time.Duration
	sent    int // requests sent so far, for request ids
}

// conformRow is the result of one command; its JSON form is the --json output.
type conformRow struct {
	Command   string   `json:"command"`
	Result    string   `json:"result"`
	Code      *int     `json:"code"`       // the reply's ErrorCode; null unless PASS
	LatencyMS *float64 `json:"latency_ms"` // null when nothing was sent
	Reason    string   `json:"reason,omitempty"`
	Reply     *string  `json:"reply,omitempty"` // the reply's payload, when one came
	Body      string   `json:"body,omitempty"`  // "sample" or "minimal": what was sent
	Subject   string   `json:"subject"`
	RequestID string   `json:"request_id,omitempty"`

	answered bool // a reply came, whatever it held
}

// check sends one command's request and judges the reply as the bridge would.
func (c *conformer) check(p conformPlan) conformRow {
	row := conformRow{
		Command: p.command.Name,
		Subject: protocol.Subject(c.prefix, protocol.KindDecide, c.appID, p.command.Name),
		Body:    p.source,
	}
	if p.body == nil {
		row.Result, row.Reason = resultSkip, "no documented sample"
		return row
	}
	c.sent++
	row.RequestID = "conform-" + strconv.Itoa(c.sent)
	start := time.Now()
	// As the bridge sends it at its defaults: no headers, the deadline and
	// the request id in the reply subject.
	reply, err := ask.RequestBy(c.nc, &nats.Msg{Subject: row.Subject, Data: p.body}, start.Add(c.timeout), row.RequestID)
	latency := float64(time.Since(start).Microseconds()) / 1000
	row.LatencyMS = &latency
	row.Result = resultFail
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		row.Reason = "no decider listening"
		return row
	case errors.Is(err, nats.ErrTimeout):
		row.Reason = "no reply within " + c.timeout.String()
		return row
	case err != nil:
		row.Reason = "NATS error: " + err.Error()
		return row
	}
	row.answered = true
	data := string(reply.Data)
	row.Reply = &data
	outcome, errorCode, reason := judgeReply(p.command, reply)
	if outcome != protocol.OutcomeDecided {
		row.Reason = reason
		return row
	}
	row.Result, row.Code = resultPass, &errorCode
	return row
}

// judgeReply reads a decider's reply exactly as the bridge does, and says
// why in words for people when it is not a valid verdict.
func judgeReply(cmd *catalog.Command, reply *nats.Msg) (protocol.Outcome, int, string) {
	outcome, code, err := cmd.JudgeReply(reply)
	switch {
	case err == nil:
		return outcome, code, ""
	case outcome == protocol.OutcomeInvalidReply:
		reason := err.Error()
		if re, ok := errors.AsType[*catalog.ReplyError](err); ok {
			reason = re.Reason
		}
		return outcome, 0, "invalid reply: " + reason
	default:
		return outcome, 0, err.Error()
	}
}

type conformSummary struct {
	passed, failed, skipped int
	minimal                 []string // commands sent the minimal body
	// silent is true when requests were sent and not one got a reply.
	silent bool
}

func summarize(rows []conformRow) conformSummary {
	var s conformSummary
	answered := false
	for _, r := range rows {
		switch r.Result {
		case resultPass:
			s.passed++
		case resultFail:
			s.failed++
		case resultSkip:
			s.skipped++
		}
		if r.Body == bodyMinimal {
			s.minimal = append(s.minimal, r.Command)
		}
		answered = answered || r.answered
	}
	s.silent = s.passed+s.failed > 0 && !answered
	return s
}

// write prints the notes and the summary line.
func (s conformSummary) write(w io.Writer, c conformer, url string) {
	for _, name := range s.minimal {
		fmt.Fprintf(w, "note: %s has no documented sample; it was sent only {\"CallbackCommand\":%q}\n", name, name)
	}
	fmt.Fprintf(w, "%d passed, %d failed, %d skipped\n", s.passed, s.failed, s.skipped)
	if s.silent {
		fmt.Fprintf(w, "No decider answered any command. Is one running, connected to %s, and subscribed to subjects under %s (see --subject-prefix and --sdkappid)?\n",
			url, c.prefix+"."+protocol.KindDecide+"."+c.appID)
	}
}

func writeConformTable(w io.Writer, rows []conformRow, sum conformSummary, c conformer, url string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COMMAND\tRESULT\tCODE\tLATENCY\tDETAIL")
	for _, r := range rows {
		code, latency := "-", "-"
		if r.Code != nil {
			code = strconv.Itoa(*r.Code)
		}
		if r.LatencyMS != nil {
			latency = strconv.FormatFloat(*r.LatencyMS, 'f', 2, 64) + "ms"
		}
		detail := shorten(r.Reason, 2*detailWidth)
		if r.Result == resultPass {
			detail = shorten(compactJSON(*r.Reply), detailWidth)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Command, r.Result, code, latency, cleanCell(detail))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	sum.write(w, c, url)
	return nil
}

func writeConformJSON(w io.Writer, rows []conformRow) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

// compactJSON drops the insignificant white space of a JSON reply, so that
// an indented one fits on a table line.
func compactJSON(s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		return s
	}
	return b.String()
}

// shorten cuts s to at most n characters, marking the cut.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// cleanCell keeps a cell on one line and its column intact: decider texts
// can hold tabs and newlines.
func cleanCell(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}
