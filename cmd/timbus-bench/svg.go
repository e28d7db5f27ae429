package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The chart's geometry, in SVG user units (pixels).
const (
	svgWidth   = 960
	svgLabelX  = 16  // setup names start here
	svgBarX    = 250 // bars start here
	svgBarMax  = 500 // the longest bar
	svgRowGap  = 8
	svgBarH    = 18 // a throughput bar
	svgSubBarH = 7  // one percentile's bar in a latency group
)

// Colours of the latency percentiles, the same in every chart, and of the
// throughput bars (timbus's own setups stand out from the baselines).
var (
	percentileColours = map[string]string{"p50": "#4c78a8", "p90": "#72b7b2", "p99": "#f58518", "p99.9": "#e45756"}
	timbusColour      = "#2f6fb0"
	baselineColour    = "#9aa7b4"
)

// writeSVGFile renders the result's chart to path, creating its directory.
func writeSVGFile(path string, res machineResult) error {
	var b bytes.Buffer
	if err := renderSVG(&b, res); err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	return nil
}

// renderSVG draws the figures of the table as a picture, so that a change
// in speed is seen at a glance: throughput per setup (with its ratio to
// raw-http), the closed-loop latency percentiles, and the open-loop ones at
// half load. Hand-written SVG: no dependency, and a browser or a README
// shows it as is.
func renderSVG(w io.Writer, res machineResult) error {
	s := &svgWriter{}
	y := 0

	// Title and what was measured.
	title := "timbus-bench"
	if v, _ := res.Config["timbus"].(string); v != "" {
		title += ": " + v
	}
	var sub []string
	if res.Date != "" {
		sub = append(sub, res.Date)
	}
	if n, ok := res.Config["rounds"]; ok {
		sub = append(sub, fmt.Sprintf("%v round(s) of %vs", n, res.Config["duration_s"]))
	}
	if n, ok := res.Config["connections"]; ok {
		sub = append(sub, fmt.Sprintf("%v connections", n))
	}
	if n, ok := res.Host["cpus"]; ok {
		sub = append(sub, fmt.Sprintf("%v CPUs", n))
	}
	if v, ok := res.Host["go"]; ok {
		sub = append(sub, fmt.Sprint(v))
	}
	y += 28
	s.text(svgLabelX, y, 18, "bold", "start", title)
	y += 20
	s.text(svgLabelX, y, 12, "", "start", strings.Join(sub, " · "))

	// Throughput.
	y += 34
	s.text(svgLabelX, y, 14, "bold", "start", "Throughput, requests per second (closed loop; medians over rounds)")
	y += 10
	maxRPS := 0.0
	for _, st := range res.Setups {
		maxRPS = math.Max(maxRPS, st.RPS)
	}
	for _, st := range res.Setups {
		y += svgRowGap
		colour := baselineColour
		if strings.HasPrefix(st.Setup, "timbus") {
			colour = timbusColour
		}
		s.text(svgLabelX, y+svgBarH-5, 12, "", "start", st.Setup)
		width := scale(st.RPS, maxRPS)
		s.rect(svgBarX, y, width, svgBarH, colour)
		label := thousands(st.RPS) + " req/s"
		if st.Setup != setupRawHTTP && st.VsRaw > 0 {
			label += fmt.Sprintf("  (%.3f× raw-http)", st.VsRaw)
		}
		s.text(svgBarX+width+6, y+svgBarH-5, 12, "", "start", label)
		y += svgBarH
	}

	// Closed-loop latency.
	y += 34
	s.text(svgLabelX, y, 14, "bold", "start", "Latency under full load, ms (closed loop; medians over rounds)")
	y = s.latency(y+10, []string{"p50", "p99", "p99.9"}, setupLatencies(res.Setups))

	// Open-loop latency at half load.
	if len(res.HalfLoad) > 0 {
		y += 34
		s.text(svgLabelX, y, 14, "bold", "start", "Latency at half the throughput reached, ms (open loop at a steady rate)")
		var rows []latencyRow
		for _, h := range res.HalfLoad {
			rows = append(rows, latencyRow{label: fmt.Sprintf("%s at %s/s", h.Setup, thousands(h.Rate)), values: []float64{h.P50, h.P90, h.P99, h.P999}})
		}
		y = s.latency(y+10, []string{"p50", "p90", "p99", "p99.9"}, rows)
	}

	y += 24
	if _, err := fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">
<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>
`, svgWidth, y, svgWidth, y, svgWidth, y); err != nil {
		return err
	}
	if _, err := w.Write(s.b.Bytes()); err != nil {
		return err
	}
	_, err := io.WriteString(w, "</svg>\n")
	return err
}

// latencyRow is one setup's percentiles, in milliseconds.
type latencyRow struct {
	label  string
	values []float64
}

func setupLatencies(setups []setupSummary) []latencyRow {
	var rows []latencyRow
	for _, st := range setups {
		rows = append(rows, latencyRow{label: st.Setup, values: []float64{st.P50, st.P99, st.P999}})
	}
	return rows
}

// latency draws a group of bars per row, one per percentile, on a common
// scale, with a legend; it returns the y below it.
func (s *svgWriter) latency(y int, names []string, rows []latencyRow) int {
	x := svgBarX
	for _, name := range names {
		s.rect(x, y, 10, 10, percentileColours[name])
		s.text(x+14, y+9, 11, "", "start", name)
		x += 70
	}
	y += 12
	maxMS := 0.0
	for _, r := range rows {
		for _, v := range r.values {
			maxMS = math.Max(maxMS, v)
		}
	}
	for _, r := range rows {
		y += svgRowGap
		h := len(r.values) * (svgSubBarH + 1)
		s.text(svgLabelX, y+h/2+4, 12, "", "start", r.label)
		for i, v := range r.values {
			width := scale(v, maxMS)
			s.rect(svgBarX, y, width, svgSubBarH, percentileColours[names[i]])
			s.text(svgBarX+width+4, y+svgSubBarH, 9, "", "start", fmt.Sprintf("%s %.2f", names[i], v))
			y += svgSubBarH + 1
		}
	}
	return y
}

// scale is v's bar length when max gets the longest bar.
func scale(v, max float64) int {
	if max <= 0 || v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return int(math.Round(v / max * svgBarMax))
}

// thousands formats a rate as a whole number with thousands separators.
func thousands(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "?"
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// svgWriter collects SVG elements; text is escaped.
type svgWriter struct {
	b bytes.Buffer
}

func (s *svgWriter) rect(x, y, w, h int, fill string) {
	fmt.Fprintf(&s.b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", x, y, w, h, fill)
}

func (s *svgWriter) text(x, y, size int, weight, anchor, text string) {
	fmt.Fprintf(&s.b, `<text x="%d" y="%d" font-size="%d" text-anchor="%s"`, x, y, size, anchor)
	if weight != "" {
		fmt.Fprintf(&s.b, ` font-weight="%s"`, weight)
	}
	s.b.WriteString(">")
	_ = xml.EscapeText(&s.b, []byte(text)) // writing to a bytes.Buffer does not fail
	s.b.WriteString("</text>\n")
}
