#!/bin/sh
# decider.sh — a timbus decider for Group.CallbackBeforeCreateGroup made of
# the nats CLI (natscli v0.5.0), jq and handler.sh. See README.md.
#
# Environment:
#   NATS_URL        NATS server(s), default nats://127.0.0.1:4222
#   SUBJECT_PREFIX  timbus's subject prefix, default timbus
#   BLOCKED         words a group name must not contain, comma- or
#                   space-separated, default test (read by handler.sh)
#
# It execs `nats reply`, so the process you started is the NATS client:
# SIGTERM or SIGINT to it stops the decider, with no shell left behind.
set -eu

me=decider.sh
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd -P)
repo=$(CDPATH= cd -- "$here/../../.." && pwd -P)
handler=$here/handler.sh

NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
SUBJECT_PREFIX=${SUBJECT_PREFIX:-timbus}
BLOCKED=${BLOCKED-test}
export BLOCKED

# The nats CLI this example was written against is the one `go install`
# puts in the repository's bin/; any other on PATH is the fallback.
if [ -x "$repo/bin/nats" ]; then
	nats=$repo/bin/nats
elif nats=$(command -v nats 2>/dev/null); then
	:
else
	echo "$me: the nats CLI is neither at $repo/bin/nats nor on PATH; install it with" >&2
	echo "  GOBIN=$repo/bin go install github.com/nats-io/natscli/nats@v0.5.0" >&2
	exit 127
fi
if ! command -v jq >/dev/null 2>&1; then
	echo "$me: jq is not on PATH; install it, e.g. apt-get install -y jq" >&2
	exit 127
fi
if [ ! -x "$handler" ]; then
	echo "$me: $handler is missing or not executable (chmod +x it)" >&2
	exit 126
fi
version=$("$nats" --version 2>&1 || :)
case $version in
v0.5.*) ;;
*) echo "$me: warning: $nats is version '$version'; this example was tested with v0.5.0" >&2 ;;
esac

case $SUBJECT_PREFIX in
'' | .* | *. | *..* | *[\ \	\*\>]*)
	echo "$me: SUBJECT_PREFIX '$SUBJECT_PREFIX': want dot-separated tokens without spaces or wildcards" >&2
	exit 2
	;;
esac

# nats reply expands {{...}} in --command as a Go template and then splits it
# like a shell would, so the handler's path goes in single quotes.
case $handler in
*'{{'* | *'}}'*)
	echo "$me: the path $handler contains {{ or }}, which nats reply would expand; move the example" >&2
	exit 2
	;;
esac
quoted="'$(printf '%s' "$handler" | sed "s/'/'\\\\''/g")'"

exec "$nats" --server "$NATS_URL" reply \
	"$SUBJECT_PREFIX.decide.*.Group.CallbackBeforeCreateGroup" \
	--queue timbus-creategroup \
	--command "$quoted"
