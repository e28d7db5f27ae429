package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"unicode"

	"github.com/timbus-dev/timbus/deciders"
)

// command is the one Tencent callback this decider answers.
const command = "Group.CallbackBeforeSendMsg"

// filter masks banned words in group messages.
type filter struct {
	words [][]rune // longest first, so that "scam artist" wins over "scam"
	log   *slog.Logger
}

func newFilter(banned []string, log *slog.Logger) *filter {
	f := &filter{log: log}
	for _, w := range banned {
		if w = strings.TrimSpace(w); w != "" {
			f.words = append(f.words, []rune(w))
		}
	}
	slices.SortStableFunc(f.words, func(a, b []rune) int { return len(b) - len(a) })
	return f
}

// decide is the decider's handler: it allows a message without banned words
// and rewrites one with them, leaving every other element as it was.
func (f *filter) decide(_ context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
	fields, err := cb.Fields()
	if err != nil {
		// The decider cannot judge the message: the bridge answers its
		// default verdict.
		return deciders.Verdict{}, deciders.Error{Code: 400, Description: err.Error()}
	}
	if len(fields.MsgBody) == 0 {
		return deciders.Verdict{}, deciders.Error{Code: 400, Description: "no MsgBody"}
	}
	body, masked, err := f.rewrite(fields.MsgBody)
	if err != nil {
		return deciders.Verdict{}, deciders.Error{Code: 400, Description: err.Error()}
	}
	f.log.Info("decided", "request_id", cb.RequestID, "sdkappid", cb.SdkAppID,
		"group", fields.GroupID, "from", fields.FromAccount, "masked", masked)
	if masked == 0 {
		return deciders.Allow(), nil
	}
	// MsgBody replaces the whole message, so it carries the untouched
	// elements too.
	return deciders.Modify(body), nil
}

// rewrite masks banned words in the text elements of body and returns the
// new body and the number of words masked. Other elements are kept as they
// came.
func (f *filter) rewrite(body []deciders.MsgElem) ([]deciders.MsgElem, int, error) {
	out := make([]deciders.MsgElem, len(body))
	total := 0
	for i, e := range body {
		out[i] = e
		if e.MsgType != deciders.MsgTypeText {
			continue
		}
		text, ok := e.Text()
		if !ok {
			return nil, 0, fmt.Errorf("MsgBody[%d] is a %s without a string Text", i, deciders.MsgTypeText)
		}
		if masked, n := f.mask(text); n > 0 {
			out[i] = deciders.TextElem(masked)
			total += n
		}
	}
	return out, total, nil
}

// mask replaces each banned word in text with one asterisk per character and
// returns the result and the number of words replaced. Words match in any
// case, and only as whole words: "spam" matches "Spam!" but not "spammer".
// Chinese and Japanese are written without spaces, so a word that starts (or
// ends) with a Han, Hiragana or Katakana character needs no boundary there.
func (f *filter) mask(text string) (string, int) {
	rs := []rune(text)
	n := 0
	for i := 0; i < len(rs); {
		l := f.matchAt(rs, i)
		if l == 0 {
			i++
			continue
		}
		for j := i; j < i+l; j++ {
			rs[j] = '*'
		}
		i += l
		n++
	}
	if n == 0 {
		return text, 0
	}
	return string(rs), n
}

// matchAt returns the length of the banned word at rs[i:], or 0.
func (f *filter) matchAt(rs []rune, i int) int {
	for _, w := range f.words {
		end := i + len(w)
		if end > len(rs) || !equalFold(rs[i:end], w) {
			continue
		}
		if !unspaced(w[0]) && i > 0 && wordRune(rs[i-1]) {
			continue
		}
		if !unspaced(w[len(w)-1]) && end < len(rs) && wordRune(rs[end]) {
			continue
		}
		return len(w)
	}
	return 0
}

// equalFold reports whether a and b are the same under Unicode case folding,
// rune by rune, as strings.EqualFold.
func equalFold(a, b []rune) bool {
	for i := range a {
		if !runeFold(a[i], b[i]) {
			return false
		}
	}
	return true
}

func runeFold(a, b rune) bool {
	if a == b {
		return true
	}
	for r := unicode.SimpleFold(a); r != a; r = unicode.SimpleFold(r) {
		if r == b {
			return true
		}
	}
	return false
}

// wordRune reports whether r belongs to a word: a letter, mark or digit in
// any script.
func wordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsNumber(r) }

// unspaced reports whether r is from a script written without spaces.
func unspaced(r rune) bool { return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana) }
