/*
 * c2cfilter: an example timbus decider written in C.
 *
 * It answers C2C.CallbackBeforeSendMsg for every app on
 * <prefix>.decide.*.C2C.CallbackBeforeSendMsg in the queue group
 * timbus-c2cfilter, and refuses one-to-one text messages that contain a
 * blocked word, with the custom code 120101 and ErrorInfo "message blocked".
 * See deciders/PROTOCOL.md for the contract it implements and README.md beside
 * this file for how to build and run it.
 *
 * Environment:
 *   NATS_URL        NATS server URL(s), comma-separated (nats://127.0.0.1:4222)
 *   SUBJECT_PREFIX  first token(s) of the subjects timbus uses (timbus)
 *   BLOCKED         comma-separated blocked words, matched case-insensitively
 *                   for ASCII letters (casino,lottery); set but empty blocks
 *                   nothing
 *
 * It logs one line per request to stderr, connects with retries (it may start
 * before NATS does), and drains its subscription on SIGTERM or SIGINT.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <nats/nats.h>

#define COMMAND "C2C.CallbackBeforeSendMsg"
#define QUEUE_GROUP "timbus-c2cfilter"
#define CLIENT_NAME "timbus-c2cfilter"

#define DEFAULT_NATS_URL "nats://127.0.0.1:4222"
#define DEFAULT_PREFIX "timbus"
#define DEFAULT_BLOCKED "casino,lottery"

/* The refusal. 120001-130000 is the range Tencent passes on to the sender. */
#define DENY_CODE 120101
#define DENY_INFO "message blocked"

/* Headers of deciders/PROTOCOL.md. */
#define H_SERVICE_ERROR "Nats-Service-Error"
#define H_SERVICE_ERROR_CODE "Nats-Service-Error-Code"

#define BAD_BODY "bad callback body"

/* How long shutdown waits for in-flight requests to be answered. */
#define DRAIN_TIMEOUT_MS 5000

struct config {
    const char *nats_url;
    char *subject;
    char *blocked_buf; /* BLOCKED, trimmed and lower-cased in place */
    char **blocked;    /* words pointing into blocked_buf */
    size_t nblocked;
    char *allow_reply; /* Tencent reply JSON, built once */
    char *deny_reply;
};

enum verdict { ALLOW, DENY, FAIL };

struct decision {
    enum verdict verdict;
    const char *word;   /* DENY: the blocked word found */
    const char *reason; /* FAIL: the Nats-Service-Error description */
};

/* ---- logging ---------------------------------------------------------- */

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* logf_ writes one line to stderr: UTC time, program name, message. */
static void logf_(const char *fmt, ...) {
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    flockfile(stderr);
    fprintf(stderr, "%s.%03ldZ c2cfilter ", stamp, ts.tv_nsec / 1000000);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    funlockfile(stderr);
}

/* ---- configuration ---------------------------------------------------- */

static char ascii_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* valid_prefix accepts dot-separated tokens without spaces or wildcards. */
static bool valid_prefix(const char *p) {
    bool token_empty = true;

    for (; *p != '\0'; p++) {
        if (*p == '.') {
            if (token_empty)
                return false;
            token_empty = true;
            continue;
        }
        if (*p == '*' || *p == '>' || *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            return false;
        token_empty = false;
    }
    return !token_empty;
}

/* make_reply renders Tencent's reply with cJSON, which escapes info. */
static char *make_reply(int code, const char *info) {
    cJSON *o = cJSON_CreateObject();
    char *s = NULL;

    if (o != NULL && cJSON_AddStringToObject(o, "ActionStatus", "OK") != NULL &&
        cJSON_AddNumberToObject(o, "ErrorCode", code) != NULL &&
        cJSON_AddStringToObject(o, "ErrorInfo", info) != NULL)
        s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* split_blocked splits the comma-separated list in place, trimming spaces and
 * dropping empty items, so that "casino, lottery," means two words. */
static int split_blocked(struct config *cfg, const char *list) {
    size_t n = 1;
    char *save = NULL, *tok;

    if ((cfg->blocked_buf = strdup(list)) == NULL)
        return -1;
    for (const char *p = list; *p != '\0'; p++)
        n += (*p == ',');
    if ((cfg->blocked = calloc(n, sizeof *cfg->blocked)) == NULL)
        return -1;
    for (tok = strtok_r(cfg->blocked_buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        char *end;

        while (*tok == ' ' || *tok == '\t')
            tok++;
        end = tok + strlen(tok);
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (*tok == '\0')
            continue;
        for (char *c = tok; *c != '\0'; c++)
            *c = ascii_lower(*c);
        cfg->blocked[cfg->nblocked++] = tok;
    }
    return 0;
}

static void free_config(struct config *cfg) {
    free(cfg->subject);
    free(cfg->blocked_buf);
    free(cfg->blocked);
    cJSON_free(cfg->allow_reply);
    cJSON_free(cfg->deny_reply);
    memset(cfg, 0, sizeof *cfg);
}

/* load_config reads the environment; it returns 0, or -1 after logging. */
static int load_config(struct config *cfg) {
    const char *url = getenv("NATS_URL");
    const char *prefix = getenv("SUBJECT_PREFIX");
    const char *blocked = getenv("BLOCKED");
    size_t len;

    memset(cfg, 0, sizeof *cfg);
    cfg->nats_url = (url != NULL && *url != '\0') ? url : DEFAULT_NATS_URL;
    if (prefix == NULL || *prefix == '\0')
        prefix = DEFAULT_PREFIX;
    if (!valid_prefix(prefix)) {
        logf_("SUBJECT_PREFIX \"%s\": want dot-separated tokens without spaces or wildcards", prefix);
        return -1;
    }
    len = strlen(prefix) + sizeof ".decide.*." COMMAND;
    if ((cfg->subject = malloc(len)) == NULL)
        goto oom;
    snprintf(cfg->subject, len, "%s.decide.*.%s", prefix, COMMAND);
    if (split_blocked(cfg, blocked != NULL ? blocked : DEFAULT_BLOCKED) != 0)
        goto oom;
    cfg->allow_reply = make_reply(0, "");
    cfg->deny_reply = make_reply(DENY_CODE, DENY_INFO);
    if (cfg->allow_reply == NULL || cfg->deny_reply == NULL)
        goto oom;
    return 0;
oom:
    logf_("out of memory");
    return -1;
}

/* ---- policy ----------------------------------------------------------- */

/* contains_fold reports whether hay contains needle (already lower case),
 * folding ASCII letters in hay. Other bytes, UTF-8 included, match exactly. */
static bool contains_fold(const char *hay, const char *needle) {
    size_t n = strlen(needle);

    for (; *hay != '\0'; hay++) {
        size_t i = 0;

        while (i < n && hay[i] != '\0' && ascii_lower(hay[i]) == needle[i])
            i++;
        if (i == n)
            return true;
    }
    return false;
}

/* has_escaped_nul reports whether valid JSON text holds the escape \u0000.
 * cJSON ends a decoded string at U+0000, so text after it would go unseen;
 * such a body is refused as unreadable rather than judged on half its text.
 * In valid JSON a backslash only starts an escape, so pairs can be skipped. */
static bool has_escaped_nul(const char *p, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (p[i] != '\\')
            continue;
        if (p[i + 1] == 'u' && i + 6 <= n && memcmp(p + i + 2, "0000", 4) == 0)
            return true;
        i++;
    }
    return false;
}

/* judge_element checks one element of MsgBody: it records in d the first
 * blocked word of a text element, or why the element cannot be read. Elements
 * other than text pass. */
static void judge_element(const cJSON *el, const struct config *cfg, struct decision *d) {
    const cJSON *type, *content, *m;
    bool saw_text = false;

    if (!cJSON_IsObject(el)) {
        d->reason = BAD_BODY ": MsgBody element is not an object";
        return;
    }
    type = cJSON_GetObjectItemCaseSensitive(el, "MsgType");
    if (!cJSON_IsString(type)) {
        d->reason = BAD_BODY ": MsgType is not a string";
        return;
    }
    if (strcmp(type->valuestring, "TIMTextElem") != 0)
        return;
    content = cJSON_GetObjectItemCaseSensitive(el, "MsgContent");
    if (!cJSON_IsObject(content)) {
        d->reason = BAD_BODY ": TIMTextElem MsgContent is not an object";
        return;
    }
    /* Every "Text" member, in case a client sends it twice. */
    cJSON_ArrayForEach(m, content) {
        if (m->string == NULL || strcmp(m->string, "Text") != 0)
            continue;
        if (!cJSON_IsString(m)) {
            d->reason = BAD_BODY ": Text is not a string";
            continue;
        }
        saw_text = true;
        for (size_t i = 0; i < cfg->nblocked && d->word == NULL; i++)
            if (contains_fold(m->valuestring, cfg->blocked[i]))
                d->word = cfg->blocked[i];
    }
    if (!saw_text && d->reason == NULL)
        d->reason = BAD_BODY ": TIMTextElem without Text";
}

/* judge decides on a callback body of len bytes (not NUL-terminated). A
 * blocked word anywhere denies, even if other parts of the body cannot be
 * read: otherwise a malformed extra element would let the word through on
 * the bridge's default verdict. */
static struct decision judge(const char *body, size_t len, const struct config *cfg) {
    struct decision d = {.verdict = ALLOW};
    const char *end = NULL;
    const cJSON *m, *el;
    bool saw_body = false;
    cJSON *root;

    root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    /* One JSON value, nothing after it but whitespace. */
    if (root != NULL)
        for (; end < body + len; end++)
            if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
                cJSON_Delete(root);
                root = NULL;
                break;
            }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        d.verdict = FAIL;
        d.reason = BAD_BODY;
        return d;
    }
    /* Every "MsgBody" member: a duplicate must not hide a blocked word. */
    cJSON_ArrayForEach(m, root) {
        if (m->string == NULL || strcmp(m->string, "MsgBody") != 0)
            continue;
        if (!cJSON_IsArray(m)) {
            d.reason = BAD_BODY ": MsgBody is not an array";
            continue;
        }
        saw_body = true;
        cJSON_ArrayForEach(el, m) judge_element(el, cfg, &d);
    }
    cJSON_Delete(root);

    if (d.word != NULL) {
        d.verdict = DENY;
        d.reason = NULL;
    } else if (d.reason != NULL) {
        d.verdict = FAIL;
    } else if (!saw_body) {
        d.verdict = FAIL;
        d.reason = BAD_BODY ": no MsgBody";
    } else if (has_escaped_nul(body, len)) {
        d.verdict = FAIL;
        d.reason = BAD_BODY ": \\u0000 in a string";
    }
    return d;
}

/* ---- NATS ------------------------------------------------------------- */

static int64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* token_at copies the n-th dot-separated token from the right of s (n = 1
 * is the last) into buf. NULL when s has fewer tokens, when that token is
 * empty or does not fit, or when nothing comes before it: subjects and reply
 * subjects are read from the right because their prefixes may hold dots. */
static const char *token_at(const char *s, int n, char *buf, size_t size) {
    const char *start, *end;
    size_t len;

    if (s == NULL || size == 0)
        return NULL;
    end = s + strlen(s);
    for (int i = 1;; i++) {
        start = end;
        while (start > s && start[-1] != '.')
            start--;
        if (start == s)
            return NULL;
        if (i == n)
            break;
        end = start - 1;
    }
    len = (size_t)(end - start);
    if (len == 0 || len >= size)
        return NULL;
    memcpy(buf, start, len);
    buf[len] = '\0';
    return buf;
}

/* reply_meta reads the deadline (Unix milliseconds) and the request id from
 * a reply subject "<inbox>.<deadline>.<request id>.<token>". false, and
 * neither, for a reply subject made otherwise (`nats request`'s, say): such a
 * request is answered, however late. */
static bool reply_meta(const char *reply, int64_t *deadline_ms, char *id, size_t size) {
    char num[24];
    char *end = NULL;
    long long ms;

    if (token_at(reply, 1, id, size) == NULL || token_at(reply, 3, num, sizeof num) == NULL)
        return false;
    if (num[0] < '0' || num[0] > '9')
        return false;
    errno = 0;
    ms = strtoll(num, &end, 10);
    if (errno != 0 || *end != '\0' || ms <= 0)
        return false;
    if (token_at(reply, 2, id, size) == NULL)
        return false;
    *deadline_ms = (int64_t)ms;
    return true;
}

/* respond publishes data, or the micro error headers when reason is set. */
static natsStatus respond(natsConnection *nc, const char *reply_to, const char *data, const char *reason) {
    natsMsg *rep = NULL;
    natsStatus s;

    s = natsMsg_Create(&rep, reply_to, NULL, data, data != NULL ? (int)strlen(data) : 0);
    if (s == NATS_OK && reason != NULL) {
        s = natsMsgHeader_Set(rep, H_SERVICE_ERROR, reason);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(rep, H_SERVICE_ERROR_CODE, "400");
    }
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(nc, rep);
    natsMsg_Destroy(rep);
    return s;
}

/* on_msg handles one request. The library calls it on the subscription's own
 * thread, one message at a time. */
static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    const struct config *cfg = closure;
    const char *reply_to = natsMsg_GetReply(msg);
    char id_buf[64], app_buf[32];
    int64_t deadline_ms = 0;
    /* The request id and the deadline ride in the reply subject, the app in
     * the subject: "<prefix>.decide.<SdkAppid>.<Family>.<Command>". */
    const char *id = reply_meta(reply_to, &deadline_ms, id_buf, sizeof id_buf) ? id_buf : "-";
    const char *app = token_at(natsMsg_GetSubject(msg), 3, app_buf, sizeof app_buf);
    const char *data = natsMsg_GetData(msg);
    int len = natsMsg_GetDataLength(msg);
    int64_t late_ms = 0;
    struct decision d;
    natsStatus s;

    (void)sub;
    if (reply_to == NULL || *reply_to == '\0') {
        logf_("request_id=%s app=%s decision=skip reason=\"no reply subject\"", id, app);
        goto out;
    }
    if (app == NULL)
        app = "-";
    if (deadline_ms > 0 && (late_ms = now_ms() - deadline_ms) >= 0) {
        logf_("request_id=%s app=%s decision=skip reason=\"deadline passed\" late_ms=%" PRId64, id, app, late_ms);
        goto out;
    }
    d = judge(data != NULL ? data : "", len > 0 ? (size_t)len : 0, cfg);
    /* Log first, so that the line is out by the time the reply arrives. */
    switch (d.verdict) {
    case ALLOW:
        logf_("request_id=%s app=%s decision=allow code=0", id, app);
        s = respond(nc, reply_to, cfg->allow_reply, NULL);
        break;
    case DENY:
        logf_("request_id=%s app=%s decision=deny code=%d word=\"%s\"", id, app, DENY_CODE, d.word);
        s = respond(nc, reply_to, cfg->deny_reply, NULL);
        break;
    default:
        logf_("request_id=%s app=%s decision=error code=400 error=\"%s\"", id, app, d.reason);
        s = respond(nc, reply_to, NULL, d.reason);
        break;
    }
    if (s != NATS_OK)
        logf_("request_id=%s reply not sent: %s", id, natsStatus_GetText(s));
out:
    natsMsg_Destroy(msg);
}

static void on_connected(natsConnection *nc, void *closure) {
    char url[256] = "";

    (void)closure;
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    logf_("connected to NATS at %s", url);
}

/* stopping is set once shutdown begins: the disconnect that closing causes
 * is no reason to log. */
static atomic_bool stopping;

static void on_disconnected(natsConnection *nc, void *closure) {
    (void)nc;
    (void)closure;
    if (!atomic_load(&stopping))
        logf_("disconnected from NATS, reconnecting");
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure) {
    (void)nc;
    (void)sub;
    (void)closure;
    logf_("NATS error: %s", natsStatus_GetText(err));
}

/* The closed callback tells main that a drain has finished. */
static pthread_mutex_t closed_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t closed_cv = PTHREAD_COND_INITIALIZER;
static bool closed;

static void on_closed(natsConnection *nc, void *closure) {
    (void)nc;
    (void)closure;
    pthread_mutex_lock(&closed_mu);
    closed = true;
    pthread_cond_signal(&closed_cv);
    pthread_mutex_unlock(&closed_mu);
}

/* wait_closed waits up to ms for on_closed; it reports whether it came. */
static bool wait_closed(int64_t ms) {
    struct timespec until;
    bool done;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&closed_mu);
    while (!closed)
        if (pthread_cond_timedwait(&closed_cv, &closed_mu, &until) == ETIMEDOUT)
            break;
    done = closed;
    pthread_mutex_unlock(&closed_mu);
    return done;
}

static void log_blocked(const struct config *cfg) {
    char list[512] = "";
    size_t used = 0;

    for (size_t i = 0; i < cfg->nblocked && used < sizeof list; i++) {
        int n = snprintf(list + used, sizeof list - used, "%s%s", i > 0 ? "," : "", cfg->blocked[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    logf_("serving %s in queue group %s; %zu blocked word(s): %s", cfg->subject, QUEUE_GROUP, cfg->nblocked,
          cfg->nblocked > 0 ? list : "(none)");
}

int main(void) {
    struct config cfg;
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    natsSubscription *sub = NULL;
    sigset_t stop_signals;
    natsStatus s;
    int sig = 0, rc = 0;

    if (load_config(&cfg) != 0) {
        free_config(&cfg);
        return 2;
    }

    /* Block the stop signals before the library starts its threads, which
     * inherit the mask, so that only sigwait below ever sees them. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    s = nats_Open(-1);
    if (s == NATS_OK)
        s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, cfg.nats_url);
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, CLIENT_NAME);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1); /* forever */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, 1000);
    if (s == NATS_OK) /* keep trying when NATS is not up yet, in the background */
        s = natsOptions_SetRetryOnFailedConnect(opts, true, on_connected, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(opts, on_disconnected, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(opts, on_connected, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(opts, on_closed, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(opts, on_error, NULL);
    if (s != NATS_OK) {
        logf_("NATS options: %s", natsStatus_GetText(s));
        rc = 1;
        goto cleanup;
    }

    s = natsConnection_Connect(&nc, opts);
    if (s == NATS_OK) {
        on_connected(nc, NULL);
    } else if (s == NATS_NOT_YET_CONNECTED) {
        logf_("NATS not reachable at %s yet; retrying", cfg.nats_url);
    } else {
        logf_("connect to %s: %s", cfg.nats_url, natsStatus_GetText(s));
        rc = 1;
        goto cleanup;
    }
    /* Before the first connect the library keeps the subscription and sends
     * it once connected. */
    s = natsConnection_QueueSubscribe(&sub, nc, cfg.subject, QUEUE_GROUP, on_msg, &cfg);
    if (s != NATS_OK) {
        logf_("subscribe to %s: %s", cfg.subject, natsStatus_GetText(s));
        rc = 1;
        goto cleanup;
    }
    log_blocked(&cfg);

    while (sigwait(&stop_signals, &sig) != 0)
        ;
    logf_("stopping on %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");

cleanup:
    atomic_store(&stopping, true);
    if (nc != NULL) {
        /* Drain: stop taking requests, answer those already received, then
         * close. It fails when not connected; then just close. */
        s = natsConnection_DrainTimeout(nc, DRAIN_TIMEOUT_MS);
        if (s != NATS_OK || !wait_closed(DRAIN_TIMEOUT_MS + 1000)) {
            if (s != NATS_OK)
                logf_("drain: %s; closing", natsStatus_GetText(s));
            natsConnection_Close(nc);
        }
    }
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    free_config(&cfg);
    /* Wait for the library's threads to end, so that nothing is left behind
     * (and valgrind reports no leaks). */
    nats_CloseAndWait(2000);
    if (rc == 0)
        logf_("stopped");
    return rc;
}
