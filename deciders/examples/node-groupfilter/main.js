#!/usr/bin/env node
// node-groupfilter is an example timbus decider written in JavaScript with
// the official NATS client. It answers Group.CallbackBeforeSendMsg for every
// app: a text with a blocked word is refused with code 10101, banned words
// are masked with asterisks, anything else is allowed. See README.md, and
// ../../PROTOCOL.md for the wire contract it implements.
//
// Usage: node main.js [--nats-url URL] [--subject-prefix timbus]
//                     [--banned spam,scam] [--blocked forbidden] [--queue NAME]
// Each flag defaults to an environment variable: NATS_URL, SUBJECT_PREFIX,
// BANNED, BLOCKED, QUEUE. NATS_USER and NATS_PASSWORD (environment only, so
// that ps does not show the password) log in to a server that requires it:
// this client ignores credentials in the URL.

import { parseArgs } from "node:util";
import { connect, headers } from "@nats-io/transport-node";
import { BadBodyError, decide, parseMsgBody, splitList, wordPattern } from "./filter.js";

const COMMAND = "Group.CallbackBeforeSendMsg";

// Header names from PROTOCOL.md. NATS header names are case-sensitive.
const H_SERVICE_ERROR = "Nats-Service-Error";
const H_SERVICE_ERROR_CODE = "Nats-Service-Error-Code";

const USAGE = `usage: node main.js [options]

Answers ${COMMAND} callbacks from timbus over NATS.

  --nats-url URL        NATS server(s), comma-separated   (NATS_URL, default nats://127.0.0.1:4222)
  --subject-prefix P    timbus subject prefix             (SUBJECT_PREFIX, default timbus)
  --banned LIST         words masked with asterisks       (BANNED, default spam,scam)
  --blocked LIST        words that block the message      (BLOCKED, default forbidden)
  --queue NAME          queue group; run copies to share  (QUEUE, default timbus-groupfilter)
  -h, --help            show this help

NATS_USER and NATS_PASSWORD in the environment log in as that user.
`;

function config(argv, env) {
  const { values } = parseArgs({
    args: argv,
    options: {
      "nats-url": { type: "string", default: env.NATS_URL || "nats://127.0.0.1:4222" },
      "subject-prefix": { type: "string", default: env.SUBJECT_PREFIX || "timbus" },
      banned: { type: "string", default: env.BANNED ?? "spam,scam" },
      blocked: { type: "string", default: env.BLOCKED ?? "forbidden" },
      queue: { type: "string", default: env.QUEUE || "timbus-groupfilter" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  const prefix = values["subject-prefix"];
  if (!/^[^.*>\s]+(\.[^.*>\s]+)*$/.test(prefix)) {
    throw new Error(`--subject-prefix ${JSON.stringify(prefix)}: want dot-separated tokens without wildcards or spaces`);
  }
  if (!/^[^.*>\s]+$/.test(values.queue)) {
    throw new Error(`--queue ${JSON.stringify(values.queue)}: want one token without wildcards or spaces`);
  }
  return {
    help: values.help,
    servers: splitList(values["nats-url"]),
    subject: `${prefix}.decide.*.${COMMAND}`,
    queue: values.queue,
    user: env.NATS_USER || undefined,
    pass: env.NATS_PASSWORD || undefined,
    banned: splitList(values.banned),
    blocked: splitList(values.blocked),
  };
}

// log writes one logfmt line to stdout.
function log(level, msg, fields = {}) {
  let line = `time=${new Date().toISOString()} level=${level} msg=${quote(msg)}`;
  for (const [k, v] of Object.entries(fields)) {
    if (v !== undefined && v !== "") {
      line += ` ${k}=${quote(String(v))}`;
    }
  }
  process.stdout.write(line + "\n");
}

function quote(s) {
  return /^[^\s"=\\]+$/.test(s) ? s : JSON.stringify(s);
}

// appOf reads the SdkAppid from "<prefix>.decide.<SdkAppid>.<Family>.<Command>":
// the third token from the right, as the prefix may hold dots.
function appOf(subject) {
  const tokens = subject.split(".");
  return tokens.length >= 5 ? tokens[tokens.length - 3] : undefined;
}

// replyMeta reads the deadline (Unix milliseconds) and the request id from
// the reply subject "<inbox>.<deadline>.<request id>.<token>". A reply
// subject made otherwise (`nats request`'s, say) holds neither: {}.
function replyMeta(reply) {
  const t = (reply ?? "").split(".");
  const n = t.length;
  if (n < 4 || !/^\d+$/.test(t[n - 3]) || Number(t[n - 3]) <= 0 || !t[n - 2] || !t[n - 1] || !t[n - 4]) {
    return {};
  }
  return { deadline: Number(t[n - 3]), requestId: t[n - 2] };
}

// handle answers one request. It never throws: a failure to answer is
// logged, and the bridge then answers Tencent with its default at the
// deadline.
function handle(msg, policy) {
  const meta = replyMeta(msg.reply);
  const fields = { request_id: meta.requestId, sdkappid: appOf(msg.subject) };
  if (!msg.reply) {
    log("warn", "ignored: not a request (no reply subject)", { ...fields, subject: msg.subject });
    return;
  }
  // Past the deadline the bridge has already answered Tencent; a reply
  // would only be counted as late.
  if (meta.deadline !== undefined && Date.now() >= meta.deadline) {
    log("info", "skipped: deadline passed", { ...fields, deadline_ms: meta.deadline });
    return;
  }
  let msgBody;
  try {
    msgBody = parseMsgBody(msg.data);
  } catch (e) {
    if (!(e instanceof BadBodyError)) {
      throw e;
    }
    const desc = `bad callback body: ${e.message}`;
    const eh = headers();
    eh.set(H_SERVICE_ERROR, desc);
    eh.set(H_SERVICE_ERROR_CODE, "400");
    msg.respond("", { headers: eh });
    log("warn", "error", { ...fields, code: 400, error: desc });
    return;
  }
  const d = decide(msgBody, policy.banned, policy.blocked);
  msg.respond(JSON.stringify(d.reply));
  log("info", "decided", { ...fields, verdict: d.verdict, code: d.reply.ErrorCode, masked: d.masked || undefined });
}

async function main() {
  let cfg;
  try {
    cfg = config(process.argv.slice(2), process.env);
  } catch (e) {
    process.stderr.write(`node-groupfilter: ${e.message}\n${USAGE}`);
    return 2;
  }
  if (cfg.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const policy = { banned: wordPattern(cfg.banned), blocked: wordPattern(cfg.blocked) };

  // A signal may arrive before the first connection succeeds: then there is
  // nothing to drain.
  let nc = null;
  let stopping = false;
  const stop = async (signal) => {
    if (stopping) {
      return;
    }
    stopping = true;
    log("info", "stopping", { signal });
    if (nc === null) {
      exitAfterOutput(0);
      return;
    }
    // drain lets requests already received be answered, then closes.
    await nc.drain().catch((e) => log("error", "drain failed", { error: e.message }));
  };
  // on, not once: a spent handler would leave a repeated signal its default
  // action, and the process would die in the middle of its drain.
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));

  log("info", "connecting", { servers: cfg.servers.join(",") });
  nc = await connect({
    servers: cfg.servers,
    user: cfg.user,
    pass: cfg.pass,
    name: "timbus-groupfilter",
    waitOnFirstConnect: true, // NATS may start after us
    maxReconnectAttempts: -1,
  });
  if (stopping) {
    await nc.close();
    return 0;
  }
  (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect" || s.type === "reconnect") {
        log("info", s.type, { server: s.server });
      } else if (s.type === "error") {
        log("error", "nats error", { error: s.error?.message });
      }
    }
  })().catch(() => {});

  nc.subscribe(cfg.subject, {
    queue: cfg.queue,
    callback: (err, msg) => {
      if (err) {
        log("error", "subscription error", { error: err.message });
        return;
      }
      try {
        handle(msg, policy);
      } catch (e) {
        log("error", "cannot answer", { request_id: replyMeta(msg.reply).requestId, error: e.message });
      }
    },
  });
  // flush makes sure the server has the subscription before we say so.
  await nc.flush();
  log("info", "serving", {
    server: nc.getServer(),
    subject: cfg.subject,
    queue: cfg.queue,
    banned: cfg.banned.join(","),
    blocked: cfg.blocked.join(","),
  });

  const err = await nc.closed();
  if (err) {
    log("error", "connection closed", { error: err.message });
    return 1;
  }
  log("info", "stopped");
  return 0;
}

// exitAfterOutput exits once stdout and stderr have taken every line. Under
// a supervisor they are pipes, which Node writes asynchronously, and
// process.exit drops what is still queued: the last lines ("stopped" among
// them) would be lost.
function exitAfterOutput(code) {
  let pending = 2;
  const done = () => {
    if (--pending === 0) {
      process.exit(code);
    }
  };
  process.stdout.write("", done);
  process.stderr.write("", done);
}

main().then(exitAfterOutput, (e) => {
  log("error", "failed", { error: e?.message ?? String(e) });
  exitAfterOutput(1);
});
