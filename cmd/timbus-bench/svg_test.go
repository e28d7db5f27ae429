package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sampleResult is a result as a full run writes it, with README's figures.
func sampleResult() machineResult {
	return machineResult{
		Version: 1,
		Date:    "2026-11-27T10:00:00Z",
		Host:    map[string]any{"cpus": 2, "go": "go1.26.8"},
		Config:  map[string]any{"rounds": 3, "duration_s": 5.0, "connections": 64, "timbus": "timbus 09eb34f <dirty> & co"},
		Setups: []setupSummary{
			{Setup: setupRawHTTP, Runs: 7, RPS: 202667, P50: 0.19, P99: 6.57, P999: 10.41},
			{Setup: setupEmbedded, Runs: 3, RPS: 48544, P50: 1.23, P99: 2.95, P999: 4.34, VsRaw: 0.242},
			{Setup: setupExternal, Runs: 3, RPS: 39133, P50: 1.54, P99: 3.58, P999: 5.02, VsRaw: 0.191},
			{Setup: setupNaive, Runs: 3, RPS: 54048, P50: 1.05, P99: 2.87, P999: 4.30, VsRaw: 0.268},
			{Setup: setupNaiveEmbedded, Runs: 3, RPS: 63277, P50: 0.90, P99: 2.62, P999: 4.86, VsRaw: 0.315},
			{Setup: setupRawNATS, Runs: 3, RPS: 83433, P50: 0.68, P99: 2.04, P999: 3.47, VsRaw: 0.415},
		},
		HalfLoad: []halfSummary{
			{Setup: setupEmbedded, Rounds: 3, Rate: 24272, P50: 0.8, P90: 1.4, P99: 2.3, P999: 3.9},
			{Setup: setupExternal, Rounds: 3, Rate: 19566, P50: 0.9, P90: 1.6, P99: 2.7, P999: 4.1},
		},
	}
}

// svgText parses an SVG document and returns its text content; it fails
// the test unless the document is well-formed XML with an svg root.
func svgText(t *testing.T, doc []byte) string {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	var text strings.Builder
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, doc)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
				if tok.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root element in namespace %q", tok.Name.Space)
				}
			}
			for _, a := range tok.Attr {
				if strings.Contains(a.Value, "NaN") || strings.Contains(a.Value, "Inf") || strings.HasPrefix(a.Value, "-") {
					t.Errorf("<%s %s=%q>", tok.Name.Local, a.Name.Local, a.Value)
				}
			}
		case xml.CharData:
			text.Write(tok)
			text.WriteByte('\n')
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	return text.String()
}

func TestSVG(t *testing.T) {
	empty := sampleResult()
	empty.HalfLoad = nil
	zeros := sampleResult()
	for i := range zeros.Setups {
		zeros.Setups[i].RPS, zeros.Setups[i].P50, zeros.Setups[i].P99, zeros.Setups[i].P999 = 0, 0, 0, math.NaN()
	}
	tests := []struct {
		name string
		res  machineResult
		want []string
	}{
		{"full run", sampleResult(), []string{"202,667 req/s", "0.242× raw-http", "p99 2.95", "timbus-embedded at 24,272/s", "p99.9 3.90", "timbus 09eb34f <dirty> & co"}},
		{"no half load", empty, []string{"48,544 req/s"}},
		{"failed runs: zeros and NaN", zeros, []string{"0 req/s"}},
		{"no runs", machineResult{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := renderSVG(&b, tt.res); err != nil {
				t.Fatal(err)
			}
			text := svgText(t, b.Bytes())
			for _, s := range tt.res.Setups {
				if !strings.Contains(text, s.Setup+"\n") {
					t.Errorf("setup %s not named", s.Setup)
				}
			}
			for _, want := range tt.want {
				if !strings.Contains(text, want) {
					t.Errorf("no %q in the chart's text:\n%s", want, text)
				}
			}
		})
	}
}

func TestWriteSVGFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "bench.svg")
	if err := writeSVGFile(path, sampleResult()); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	svgText(t, doc)
	if err := writeSVGFile(filepath.Join(path, "under-a-file.svg"), sampleResult()); err == nil {
		t.Error("writing under a file succeeded")
	}
}
