package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/timbus-dev/timbus/bridge"
	"github.com/timbus-dev/timbus/deciders/catalog"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// appIDPlaceholder stands in for the SdkAppid in subjects when none is given.
const appIDPlaceholder = "<SdkAppid>"

func runCommands(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("timbus commands")
	appID := fs.String("sdkappid", "", "")
	prefix := fs.String("subject-prefix", protocol.DefaultSubjectPrefix, "")
	asJSON := fs.Bool("json", false, "")
	if code, ok := parseArgs(fs, args, stdout, stderr, printCommandsHelp); !ok {
		return code
	}
	if err := checkSubjectParts(*appID, *prefix); err != nil {
		usageError(stderr, fs.Name(), err)
		return exitUsage
	}
	if *appID == "" {
		*appID = appIDPlaceholder
	}
	rows := commandRows(*prefix, *appID)
	var err error
	if *asJSON {
		err = writeCommandsJSON(stdout, rows)
	} else {
		err = writeCommandsTable(stdout, rows)
	}
	if err != nil {
		fmt.Fprintf(stderr, "timbus commands: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func printCommandsHelp(w io.Writer) {
	fmt.Fprintf(w, `Usage: timbus commands [--sdkappid ID] [--subject-prefix P] [--json]

Lists every Tencent Cloud Chat callback command timbus knows: how Tencent
treats its reply, the ErrorCodes a verdict may carry, the extra reply fields
it understands, and the NATS subject the bridge uses for it (a decide subject
for commands Tencent waits on, an event subject otherwise).

Flags:
  --sdkappid ID         SdkAppid to show in subjects (default %q)
  --subject-prefix P    subject prefix, as given to timbus serve (default %q)
  --json                print a JSON array instead of a table
`, appIDPlaceholder, protocol.DefaultSubjectPrefix)
}

// checkSubjectParts asks the bridge's own validation whether the SdkAppid and
// prefix could be served, so that the listing never shows a subject the
// bridge would refuse. The placeholder app only lets the prefix be checked.
func checkSubjectParts(appID, prefix string) error {
	cfg := bridge.DefaultConfig()
	cfg.SubjectPrefix = prefix
	cfg.Apps = []bridge.App{{ID: "1"}}
	if appID != "" {
		cfg.Apps[0].ID = appID
	}
	return cfg.Validate()
}

// commandRow is one line of the listing; its JSON form is the --json output.
type commandRow struct {
	Command     string       `json:"command"`
	Kind        string       `json:"kind"`
	NeedsReply  bool         `json:"needs_reply"`
	Codes       []int        `json:"codes"`
	CustomCodes *customCodes `json:"custom_codes,omitempty"`
	Fields      []string     `json:"fields"`
	Subject     string       `json:"subject"`

	codesText string // the table's rendering of Codes and CustomCodes
}

type customCodes struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

func commandRows(prefix, appID string) []commandRow {
	all := catalog.All()
	rows := make([]commandRow, 0, len(all))
	for _, c := range all {
		kind := protocol.KindEvent
		if c.Kind.NeedsReply() {
			kind = protocol.KindDecide
		}
		row := commandRow{
			Command:    c.Name,
			Kind:       c.Kind.String(),
			NeedsReply: c.Kind.NeedsReply(),
			// Empty slices, not nil, so that JSON consumers always get arrays.
			Codes:     append([]int{}, c.Codes...),
			codesText: c.CodesString(),
			Fields:    append([]string{}, c.Fields.Names()...),
			Subject:   protocol.Subject(prefix, kind, appID, c.Name),
		}
		if c.Custom.Max != 0 {
			row.CustomCodes = &customCodes{Min: c.Custom.Min, Max: c.Custom.Max}
		}
		rows = append(rows, row)
	}
	return rows
}

func writeCommandsTable(w io.Writer, rows []commandRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COMMAND\tKIND\tCODES\tFIELDS\tSUBJECT")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Command, r.Kind, orDash(r.codesText), orDash(strings.Join(r.Fields, ", ")), r.Subject)
	}
	return tw.Flush()
}

func writeCommandsJSON(w io.Writer, rows []commandRow) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

// orDash keeps empty cells visible, so columns stay readable and splittable.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
