#!/bin/sh
# handler.sh — decides one Group.CallbackBeforeCreateGroup callback.
#
# decider.sh has `nats reply --command` run this once per request. natscli
# v0.5.0 hands the command the request body in $NATS_REQUEST_BODY and the
# subject in $NATS_REQUEST_SUBJECT (nothing on stdin, no headers), and sends
# everything the command writes, stdout AND stderr together, as the reply,
# whatever its exit status. So this script writes exactly one thing: a Tencent
# reply, or, when it cannot decide, a line of text that timbus rejects as an
# invalid reply, which makes timbus answer Tencent its default verdict.
#
# Policy: refuse a group whose "Name" contains one of the words in $BLOCKED
# (comma- or space-separated, default "test"; ASCII letters compare
# case-insensitively, "MyTestGroup" and "contest" both contain "test"); allow
# every other name.

ALLOW='{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}'
DENY='{"ActionStatus":"OK","ErrorCode":10150,"ErrorInfo":"group name not allowed"}'

# The jq program prints "allow", "deny", or why it cannot decide. The body
# goes in on stdin and the words as --arg, so neither is ever parsed as code.
FILTER='
  [$blocked | ascii_downcase | splits("[\\s,]+") | select(length > 0)] as $words
  | if length != 1 then "the body is not one JSON value"
    elif (.[0] | type) != "object" then "the body is not a JSON object"
    elif (.[0].Name | type) != "string" then "the body has no string \"Name\""
    else (.[0].Name | ascii_downcase) as $name
      | if any($words[]; . as $w | $name | index($w) != null)
        then "deny" else "allow" end
    end'

if ! command -v jq >/dev/null 2>&1; then
	echo "cannot decide: jq is not installed"
	exit 3
fi

verdict=$(printf '%s' "${NATS_REQUEST_BODY-}" |
	jq --slurp --raw-output --arg blocked "${BLOCKED-test}" "$FILTER" 2>&1)

case $verdict in
allow) printf '%s' "$ALLOW" ;;
deny) printf '%s' "$DENY" ;;
*)
	echo "cannot decide: $verdict"
	exit 3
	;;
esac
