package bridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/jsonscan"
	"github.com/timbus-dev/timbus/internal/natstest"
)

// recordKeys is every field an audit record may have: protocol.AuditRecord's.
var recordKeys = func() map[string]bool {
	keys := map[string]bool{}
	t := reflect.TypeFor[protocol.AuditRecord]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		keys[name] = true
	}
	return keys
}()

// parseRecord checks that data is one valid JSON object in valid UTF-8 with
// only fields timbus writes, and returns its fields.
func parseRecord(t testing.TB, data []byte) map[string]json.RawMessage {
	t.Helper()
	if !utf8.Valid(data) || !json.Valid(data) {
		t.Fatalf("record is not valid JSON in UTF-8:\n%.2000q", data)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatalf("record is not one JSON object: %v\n%.2000s", err, data)
	}
	// A duplicate key would let a value written later override timbus's.
	dec := json.NewDecoder(bytes.NewReader(data))
	seen := map[string]bool{}
	_, _ = dec.Token() // {
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("record: %v", err)
		}
		key := tok.(string)
		if seen[key] {
			t.Errorf("record has %q twice", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("record: %v", err)
		}
	}
	for k := range fields {
		if !recordKeys[k] {
			t.Errorf("record has field %q, which timbus does not write", k)
		}
	}
	return fields
}

func keysOf(m map[string]json.RawMessage) []string { return slices.Sorted(maps.Keys(m)) }

// TestHostile_LateReplies: whatever a decider replies after the
// deadline, the late record is one valid JSON object with only timbus's
// fields and the callback's request id; the reply is in answer as the JSON
// value it is, or else as a JSON string.
func TestHostile_LateReplies(t *testing.T) {
	huge := `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"` + strings.Repeat("x", 1<<20-128) + `"}`
	for _, tt := range []struct {
		name  string
		reply string
		// asJSON: answer holds the reply as a JSON value; otherwise as a
		// string, cut when cut is set.
		asJSON, cut bool
	}{
		{"verdict", oaCreateDeny, true, false},
		{"not JSON", `deny, I said`, false, false},
		{"crafted to add fields", `{"ActionStatus":"OK","ErrorCode":0},"outcome":"decided","request_id":"forged-id","x":{}`, false, false},
		{"two values", `{"ActionStatus":"OK","ErrorCode":0} {"x":1}`, false, false},
		{"unterminated", `{"ActionStatus":"OK","ErrorCode":0,"x":"`, false, false},
		{"invalid UTF-8 in JSON", "{\"ActionStatus\":\"OK\",\"ErrorCode\":0,\"ErrorInfo\":\"\xff\xfe\"}", true, false},
		{"invalid UTF-8, not JSON", "deny \xff\"}", false, false},
		{"control characters", "deny\x00\x01\n", false, false},
		{"huge", huge, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := startBridge(t, func(c *Config) { c.Timeout = 150 * time.Millisecond })
			records := subscribe(t, tb.nc, "timbus.audit.>")
			decider(t, tb.nc, decideOA, func(*nats.Msg) *nats.Msg {
				time.Sleep(300 * time.Millisecond)
				return &nats.Msg{Data: []byte(tt.reply)}
			})
			if got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)); got.body != allowAnswer {
				t.Fatalf("answer %s", got.body)
			}
			waitFor(t, 5*time.Second, func() error {
				if n := len(records.all()); n != 2 {
					return fmt.Errorf("%d records, want the callback's and the late reply's", n)
				}
				return nil
			})
			msgs := records.all()
			first, late := parseRecord(t, msgs[0].Data), parseRecord(t, msgs[1].Data)
			if string(late["request_id"]) != string(first["request_id"]) || string(late["outcome"]) != `"late"` {
				t.Errorf("late record: request_id %s outcome %s; the callback's request_id %s",
					late["request_id"], late["outcome"], first["request_id"])
			}
			want := []string{"answer", "code", "command", "http_status", "kind", "latency_ms", "outcome", "reason", "received_at", "request_id", "sdkappid", "version"}
			if tt.cut {
				want = append(want, "truncated")
			}
			if got := keysOf(late); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
				t.Errorf("late record fields %v\nwant %v", got, want)
			}
			answer := late["answer"]
			sane := strings.ToValidUTF8(tt.reply, "\uFFFD")
			switch {
			case tt.asJSON:
				var got, wantV any
				if err := json.Unmarshal(answer, &got); err != nil || json.Unmarshal([]byte(tt.reply), &wantV) != nil || !reflect.DeepEqual(got, wantV) {
					t.Errorf("answer %s, want the reply as JSON %q", answer, tt.reply)
				}
			default:
				var s string
				if err := json.Unmarshal(answer, &s); err != nil {
					t.Fatalf("answer %.200s is not a string: %v", answer, err)
				}
				if tt.cut {
					if len(s) == 0 || !strings.HasPrefix(sane, s) || len(s) >= len(tt.reply) {
						t.Errorf("cut answer (%d bytes) is not a prefix of the reply", len(s))
					}
					var cut map[string]int
					if err := json.Unmarshal(late["truncated"], &cut); err != nil || cut["answer"] != len(tt.reply) {
						t.Errorf("truncated %s, want answer: %d", late["truncated"], len(tt.reply))
					}
					if max := tb.Bridge.nc.MaxPayload(); int64(len(msgs[1].Data)) > max {
						t.Errorf("record of %d bytes over max_payload %d", len(msgs[1].Data), max)
					}
				} else if s != sane {
					t.Errorf("answer %q, want the reply %q", s, sane)
				}
			}
		})
	}
}

// TestHostile_AuditRecordTooBig: a record that would not fit NATS's
// max_payload (a body near the limit, a client address of control
// characters that escape to six bytes each) is cut and sent, not dropped:
// it arrives as valid JSON, says what was cut and how big it was, and no
// record fails.
func TestHostile_AuditRecordTooBig(t *testing.T) {
	clientIP := strings.Repeat("\x01", 2400)
	for _, tt := range []struct {
		name       string
		maxPayload int32 // the server's; 0 for NATS's default, 1 MiB
		bodySize   int
	}{
		{"small max_payload", 32 << 10, 32<<10 - 512},
		{"body near max-body-size", 0, 1<<20 - 64},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := natstest.Options()
			opts.MaxPayload = tt.maxPayload
			ns := natstest.RunWith(t, opts)
			tb := runBridge(t, ns.ClientURL(), nil)
			records := subscribe(t, natsConnect(t, ns.ClientURL()), "timbus.audit.>")
			const command = "Group.CallbackBeforeCreateGroup" // nobody decides: the default at once
			prefix := `{"CallbackCommand":"` + command + `","Pad":"`
			body := []byte(prefix + strings.Repeat("p", tt.bodySize-len(prefix)-2) + `"}`)
			u := tb.base + "/?SdkAppid=" + testApp + "&CallbackCommand=" + command + "&ClientIP=" + url.QueryEscape(clientIP)
			if got := post(t, u, body); got.status != 200 {
				t.Fatalf("callback: %d %s", got.status, got.body)
			}
			waitFor(t, 5*time.Second, func() error {
				if n := len(records.all()); n != 1 {
					return fmt.Errorf("%d records", n)
				}
				return nil
			})
			data := records.all()[0].Data
			if max := tb.Bridge.nc.MaxPayload(); int64(len(data)) > max {
				t.Errorf("record of %d bytes over max_payload %d", len(data), max)
			}
			rec := parseRecord(t, data)
			var cut map[string]int
			if err := json.Unmarshal(rec["truncated"], &cut); err != nil || cut["body"] != len(body) || cut["client_ip"] != len(clientIP) {
				t.Errorf("truncated %s, want body: %d and client_ip: %d", rec["truncated"], len(body), len(clientIP))
			}
			var gotBody, gotIP string
			if err := json.Unmarshal(rec["body"], &gotBody); err != nil || len(gotBody) == 0 || !bytes.HasPrefix(body, []byte(gotBody)) {
				t.Errorf("cut body is not a string prefix of the body (%v): %.100s", err, rec["body"])
			}
			if err := json.Unmarshal(rec["client_ip"], &gotIP); err != nil || len(gotIP) == 0 || !strings.HasPrefix(clientIP, gotIP) || len(rec["client_ip"]) > auditShortField {
				t.Errorf("client_ip %d bytes encoded (%v), want a prefix within %d", len(rec["client_ip"]), err, auditShortField)
			}
			var r protocol.AuditRecord
			if err := json.Unmarshal(data, &r); err != nil || !r.Cut("body") || r.Outcome == "" || r.RequestID == "" {
				t.Errorf("as protocol.AuditRecord: %+v, %v", r, err)
			}
			if f := tb.audit.failed.Load(); f != 0 {
				t.Errorf("timbus_audit_failed_total = %d", f)
			}
			if _, text := get(t, tb.base+PathMetrics); metricValue(t, text, "timbus_audit_failed_total") != "0" {
				t.Errorf("timbus_audit_failed_total is not 0:\n%s", text)
			}
		})
	}
}

// FuzzAuditRecord: whatever bytes strangers put in an audit entry, the
// record is one valid JSON object in UTF-8 within the size limit, with
// exactly the fields the entry calls for; JSON values are kept as the
// values they are, anything else as strings, and a field cut is named in
// truncated with its size.
func FuzzAuditRecord(f *testing.F) {
	f.Add([]byte(oaCreateDeny), []byte(`{"CallbackCommand":"x"}`), []byte(allowAnswer), "10.0.0.7", "timeout", "", false, uint16(0))
	f.Add([]byte(`{"ActionStatus":"OK","ErrorCode":0},"outcome":"decided","request_id":"forged-id","x":{}`),
		[]byte("{\"a\":\"\xff\"}"), []byte("not json"), strings.Repeat("\x01", 2400), "q\"uote", "SdkAppid=1&x=\x00", true, uint16(100))
	f.Add([]byte(strings.Repeat(`{"a":`, 50)+"1"+strings.Repeat("}", 50)), []byte(`"`+strings.Repeat("é", 5000)+`"`),
		[]byte(" [1, 2] "), "", strings.Repeat("r", 5000), "", true, uint16(2000))
	f.Fuzz(func(t *testing.T, answer, body, shadow []byte, clientIP, reason, query string, shadowed bool, extra uint16) {
		// Above what the record takes without its JSON values (text
		// fields are bounded: some 7 KiB at most), and small enough for
		// small inputs to be cut.
		limit := 8<<10 + int(extra)%(8<<10)
		e := &auditEntry{}
		e.reset()
		e.received = time.Unix(1700000000, 0)
		e.app, e.command, e.kind, e.outcome = testApp, oaCreate, "before", protocol.OutcomeTimeout
		e.id = e.keep([]byte("req-1"))
		e.clientIP = e.keep([]byte(clientIP))
		e.body = e.keep(body)
		e.answer, e.reason, e.query = answer, reason, query
		e.shadowed, e.shadowOutcome, e.shadowAnswer, e.shadowReason = shadowed, protocol.OutcomeDecided, shadow, reason
		out := e.encode([]byte("prefix"), limit)
		if !bytes.HasPrefix(out, []byte("prefix")) {
			t.Fatal("encode lost what was in its buffer")
		}
		out = out[len("prefix"):]
		// Values the bridge checked on the way in are copied unchecked:
		// the record must be the same byte for byte.
		e.bodyChecked, e.answerChecked = jsonscan.Check(body) == nil, jsonscan.Check(answer) == nil
		if checked := e.encode(nil, limit); !bytes.Equal(checked, out) {
			t.Fatalf("record of checked values differs:\n%.500s\nunchecked:\n%.500s", checked, out)
		}
		if len(out) > limit {
			t.Fatalf("record of %d bytes over the limit %d", len(out), limit)
		}
		rec := parseRecord(t, out)
		var cut map[string]int
		if raw, ok := rec["truncated"]; ok {
			if err := json.Unmarshal(raw, &cut); err != nil || len(cut) == 0 {
				t.Fatalf("truncated %s: %v", raw, err)
			}
		}
		want := map[string]bool{"version": true, "request_id": true, "received_at": true, "sdkappid": true, "command": true,
			"kind": true, "outcome": true, "http_status": true, "code": true, "latency_ms": true,
			"client_ip": clientIP != "", "reason": reason != "", "query": query != "", "truncated": len(cut) > 0}
		values := map[string][]byte{"answer": answer, "body": body}
		if shadowed {
			want["shadow_outcome"], want["shadow_code"], want["agrees"], want["shadow_reason"] = true, true, true, reason != ""
			values["shadow_verdict"] = shadow
		}
		for key, v := range values {
			_, isCut := cut[key]
			want[key] = len(v) > 0 && (!isCut || rec[key] != nil)
			if isCut && cut[key] != len(v) {
				t.Errorf("truncated %s: %d, its size is %d", key, cut[key], len(v))
			}
			if len(v) > 0 && rec[key] == nil && !isCut {
				t.Errorf("%s left out without being named in truncated", key)
			}
			if rec[key] != nil {
				checkValue(t, key, v, rec[key], isCut)
			}
		}
		for key, cutSize := range cut {
			if !recordKeys[key] || key == "truncated" {
				t.Errorf("truncated names %q", key)
			}
			if _, isValue := values[key]; !isValue && rec[key] == nil {
				t.Errorf("truncated names %q (%d bytes), which is not in the record", key, cutSize)
			}
		}
		for key, present := range want {
			if _, got := rec[key]; got != present {
				t.Errorf("field %s present %v, want %v\n%.500s", key, got, present, out)
			}
		}
		if len(rec) > len(want) {
			t.Errorf("fields %v, want %v", keysOf(rec), want)
		}
	})
}

// checkValue checks that the encoded field holds v: as the JSON value v is
// when whole and valid, else as a string holding v, or a prefix of it when
// cut.
func checkValue(t *testing.T, key string, v []byte, got json.RawMessage, isCut bool) {
	t.Helper()
	if !isCut && json.Valid(v) {
		var want, have bytes.Buffer
		_ = json.Compact(&want, v)
		_ = json.Compact(&have, got)
		if utf8.Valid(v) && want.String() != have.String() {
			t.Errorf("%s = %.200s, want the value %.200s", key, got, v)
		}
		return
	}
	var s string
	if err := json.Unmarshal(got, &s); err != nil {
		t.Fatalf("%s = %.200s: not a string: %v", key, got, err)
	}
	if !utf8.Valid(v) {
		return // each invalid byte became U+FFFD
	}
	if isCut && (!strings.HasPrefix(string(v), s) || len(s) >= len(v)) || !isCut && s != string(v) {
		t.Errorf("%s = %.200q from %.200q (cut %v)", key, s, v, isCut)
	}
}

// TestShare: the JSON values of a record share what is left of its limit,
// the smaller ones whole when they fit an equal share.
func TestShare(t *testing.T) {
	for _, tt := range []struct {
		budget      int
		sizes, want [numRawFields]int
	}{
		{100, [numRawFields]int{10, 20, 30}, [numRawFields]int{10, 20, 30}},
		{100, [numRawFields]int{50, 1000, 0}, [numRawFields]int{50, 50, 0}},
		{100, [numRawFields]int{1000, 10, 1000}, [numRawFields]int{45, 10, 45}},
		{90, [numRawFields]int{40, 40, 40}, [numRawFields]int{30, 30, 30}},
		{-5, [numRawFields]int{1, 2, 3}, [numRawFields]int{0, 0, 0}},
		{100, [numRawFields]int{}, [numRawFields]int{}},
	} {
		if got := share(tt.budget, tt.sizes); got != tt.want {
			t.Errorf("share(%d, %v) = %v, want %v", tt.budget, tt.sizes, got, tt.want)
		}
	}
}
