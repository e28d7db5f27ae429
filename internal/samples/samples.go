// Package samples holds Tencent's documented callback bodies and replies, one
// request per command. They serve as test vectors and as what `timbus
// conform` sends; a package of their own so that only what replays them
// (conform, the bench, tests) carries their 124 KB, not every decider.
package samples

import (
	"embed"
	"path"
	"sort"
	"strings"
)

//go:embed requests/*.json responses/*.json
var files embed.FS

// Sample is one documented body.
type Sample struct {
	// Command is the CallbackCommand the sample belongs to.
	Command string
	// Name is the file name without extension, e.g.
	// "C2C.CallbackBeforeSendMsg.modify" for a reply sample.
	Name string
	Body []byte
}

// Requests returns the documented callback bodies, one per command, sorted
// by command.
func Requests() []Sample { return read("requests") }

// Replies returns the documented replies to before commands (deny, message
// rewrite, partial refusals, per-user results, chatbot data).
func Replies() []Sample { return read("responses") }

// Request returns the documented body of command's callback.
func Request(command string) ([]byte, bool) {
	b, err := files.ReadFile("requests/" + command + ".json")
	return b, err == nil
}

func read(dir string) []Sample {
	entries, _ := files.ReadDir(dir)
	out := make([]Sample, 0, len(entries))
	for _, e := range entries {
		body, err := files.ReadFile(path.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		name := strings.TrimSuffix(e.Name(), ".json")
		parts := strings.SplitN(name, ".", 3)
		out = append(out, Sample{Command: parts[0] + "." + parts[1], Name: name, Body: body})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
