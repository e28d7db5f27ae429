package catalog

import (
	"embed"
	"path"
	"sort"
	"strings"
)

// samples holds Tencent's documented sample bodies, built into the binary so
// that tools (timbus conform) can replay them anywhere.
//
//go:embed samples/requests/*.json samples/responses/*.json
var samples embed.FS

// Sample is one documented body.
type Sample struct {
	// Command is the CallbackCommand the sample belongs to.
	Command string
	// Name is the file name without extension, e.g.
	// "C2C.CallbackBeforeSendMsg.modify" for a reply sample.
	Name string
	Body []byte
}

// SampleRequests returns the documented callback bodies, one per command,
// sorted by command.
func SampleRequests() []Sample { return readSamples("samples/requests") }

// SampleReplies returns the documented replies to before commands (deny,
// message rewrite, partial refusals, per-user results, chatbot data).
func SampleReplies() []Sample { return readSamples("samples/responses") }

// SampleRequest returns the documented body of command's callback.
func SampleRequest(command string) ([]byte, bool) {
	b, err := samples.ReadFile("samples/requests/" + command + ".json")
	return b, err == nil
}

func readSamples(dir string) []Sample {
	entries, _ := samples.ReadDir(dir)
	out := make([]Sample, 0, len(entries))
	for _, e := range entries {
		body, err := samples.ReadFile(path.Join(dir, e.Name()))
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
