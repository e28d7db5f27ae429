package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// Bridge receives Tencent callbacks over HTTP and answers them through NATS.
type Bridge struct {
	cfg     Config
	log     zerolog.Logger
	apps    map[string]*appRoutes // by SdkAppid; read-only after New
	appList []*appRoutes          // the same, in configuration order
	// sources is nil when every source address is admitted.
	sources *sourceFilter

	ids       *requestIDs
	exchanges sync.Pool

	// group runs every goroutine the bridge starts; its context, cancelled
	// by Shutdown, is the parent of those the bridge makes on its own.
	group *group

	started  atomic.Bool
	stopping atomic.Bool
	draining atomic.Bool
	inflight atomic.Int64

	metrics      *metrics
	ops          func(*fasthttp.RequestCtx) bool
	registry     registry
	registryStop chan struct{}
	registryDone chan struct{}
	opsSrv       *fasthttp.Server // with MetricsListen
	opsLn        *listener

	ns         *server.Server // embedded NATS, nil when external
	nc         *nats.Conn
	natsClosed chan struct{}
	audit      *auditor
	mux        *replyMux
	confirm    *confirmer          // confirms events published on core NATS
	events     jetstream.JetStream // nil unless an events stream is configured
	// setupStreams creates the configured streams that are missing; nil
	// without streams. streamsRecheck spaces recheckStreams's runs of it.
	setupStreams   func(context.Context) error
	streamsRecheck gate
	srv            *fasthttp.Server
	ln             *listener
	// With HTTPS: the certificate in use, the TLS settings, and the gate
	// spacing warnings about failed handshakes.
	certs   *certStore
	tlsCfg  *tls.Config
	tlsWarn gate
	// serveDone is closed when Serve returns, serveErr being what it
	// returned; failed says why serving stopped if it stopped before Shutdown.
	serveDone chan struct{}
	serveErr  error
	failed    error

	// natsAccount is the embedded server's account timbus is in; "" for
	// the global one.
	natsAccount string
}

// New validates cfg and builds a Bridge. The Bridge keeps its own copy.
func New(cfg Config) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Apps = append([]App(nil), cfg.Apps...)
	commands := make(map[string]CommandConfig, len(cfg.Commands))
	for k, v := range cfg.Commands {
		commands[k] = v
	}
	cfg.Commands = commands
	b := &Bridge{
		cfg:          cfg,
		log:          cfg.Logger.With().Str(logKeyComponent, "bridge").Logger(),
		apps:         make(map[string]*appRoutes, len(cfg.Apps)),
		ids:          newRequestIDs(),
		group:        newGroup(),
		natsClosed:   make(chan struct{}),
		serveDone:    make(chan struct{}),
		registryStop: make(chan struct{}),
		registryDone: make(chan struct{}),
	}
	b.metrics = newMetrics(b)
	b.ops = b.opsHandler()
	b.exchanges.New = func() any { return newExchange() }
	if len(cfg.AllowCIDRs) > 0 {
		// Validate has parsed these already.
		allow, _ := parsePrefixes(cfg.AllowCIDRs)
		proxies, _ := parsePrefixes(cfg.TrustedProxies)
		b.sources = &sourceFilter{allow: allow, proxies: proxies, header: []byte(cfg.ProxyHeader)}
	}
	if cfg.TLSCert != "" {
		certs, err := newCertStore(cfg.TLSCert, cfg.TLSKey, b.log)
		if err != nil {
			return nil, &ConfigError{Field: "tls-cert", Value: cfg.TLSCert, Err: fmt.Errorf("%w: %w", ErrInvalidValue, err)}
		}
		var clientCAs *x509.CertPool
		if cfg.TLSClientCA != "" {
			if clientCAs, err = loadClientCAs(cfg.TLSClientCA); err != nil {
				return nil, &ConfigError{Field: "tls-client-ca", Value: cfg.TLSClientCA, Err: fmt.Errorf("%w: %w", ErrInvalidValue, err)}
			}
		}
		b.certs, b.tlsCfg = certs, newTLSConfig(certs, clientCAs)
	}
	for _, app := range b.cfg.Apps {
		a := newAppRoutes(&b.cfg, app, &b.log, b.metrics)
		b.apps[app.ID] = a
		b.appList = append(b.appList, a)
	}
	return b, nil
}

// Start connects to NATS (starting the embedded server first when no URL is
// configured) and starts serving HTTP. It returns once the listener is open.
// An unreachable external NATS does not stop Start: the bridge keeps trying
// and answers callbacks with their default verdict meanwhile.
func (b *Bridge) Start(ctx context.Context) (err error) {
	if !b.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// What is set up so far, undone in reverse order if a later step fails.
	var undo []func()
	defer func() {
		if err == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		// The steps undone have stopped their goroutines; the rest (a
		// stream set-up retrying) end with the group's context.
		b.group.close()
		b.group.wg.Wait()
		// Nothing is left for Shutdown to stop; it returns at once.
		b.stopping.Store(true)
	}()
	url := b.cfg.NATSURL
	var embedded []nats.Option
	if url == "" {
		ns, connect, err := b.startEmbeddedNATS()
		if err != nil {
			return err
		}
		b.ns = ns
		undo = append(undo, b.stopEmbeddedNATS)
		url = ns.ClientURL()
		embedded = connect
	}
	opts := []nats.Option{
		nats.Name("timbus"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		// No reconnect buffer: a publish while NATS is away fails at once
		// instead of waiting in the client's memory, where a shutdown before
		// NATS returns would lose it after Tencent had been told OK. An
		// after callback then gets 503, and Tencent can retry; audit records
		// wait in the auditor's own bounded queue.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(c *nats.Conn) { b.log.Info().Str("url", c.ConnectedUrlRedacted()).Msg("NATS connected") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil && !b.stopping.Load() {
				b.log.Warn().Err(err).Msg("NATS disconnected; callbacks get their default verdict until it is back")
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { b.log.Info().Str("url", c.ConnectedUrlRedacted()).Msg("NATS reconnected") }),
		nats.ClosedHandler(func(*nats.Conn) { close(b.natsClosed) }),
	}
	// The bridge reaches its embedded server over its loopback listener, not
	// the server's in-process pipe: the pipe hands over one write at a time,
	// so the server forwarded requests to deciders in smaller batches, and
	// deciders spent a third more CPU per request (make bench, A/B: +5 %
	// throughput over loopback).
	authOpts, err := b.cfg.NATSAuth.Options()
	if err != nil {
		return err
	}
	opts = append(append(opts, authOpts...), embedded...)
	nc, err := b.connectNATS(url, opts)
	if err != nil {
		if IsAuthError(err) {
			return fmt.Errorf("%w: %w: connect %s as %s: %w", ErrNATS, ErrNATSAuth, RedactURLs(url), b.cfg.NATSAuth, urlError{err, url})
		}
		return fmt.Errorf("%w: connect %s: %w", ErrNATS, RedactURLs(url), urlError{err, url})
	}
	b.nc = nc
	undo = append(undo, nc.Close)
	if nc.IsConnected() {
		if limit := nc.MaxPayload(); int64(b.cfg.MaxBodySize)+payloadHeadroom > limit {
			b.log.Warn().Int64("nats_max_payload", limit).Int("max_body_size", b.cfg.MaxBodySize).
				Msg("NATS max_payload is smaller than the largest body accepted: such callbacks get the default verdict")
		}
	}

	b.audit = newAuditor(b.group, nc, b.cfg.SubjectPrefix, b.log)
	undo = append(undo, func() { _ = b.audit.stop(ctx) }) // nothing was audited yet
	if b.ns != nil {
		// Interest is counted in the account timbus publishes in.
		acc := b.ns.GlobalAccount()
		if b.natsAccount != "" {
			if acc, err = b.ns.LookupAccount(b.natsAccount); err != nil {
				return fmt.Errorf("%w: account %s: %w", ErrNATS, b.natsAccount, err)
			}
		}
		b.audit.interest, b.audit.subscriptions = acc.SubscriptionInterest, acc.TotalSubs
	} else if b.cfg.AuditStream.Name == "" {
		if b.audit.hearing, err = newHearing(nc); err != nil {
			return fmt.Errorf("%w: audit probe subscription: %w", ErrNATS, err)
		}
	}
	b.mux, err = newReplyMux(b.group, nc)
	if err != nil {
		return fmt.Errorf("%w: reply subscription: %w", ErrNATS, err)
	}
	undo = append(undo, b.mux.stop)
	if err := b.streams(ctx); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", b.cfg.Listen)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrListen, b.cfg.Listen, err)
	}
	undo = append(undo, func() { ln.Close() })
	limits := newConnLimits(b.cfg.MaxConns, b.cfg.MaxConnsPerIP, b.metrics.reject, b.log)
	b.ln = newListener(ln, "callback", b.log, limits)
	if shortest := shortestTimeout(b.cfg.ReadTimeout, b.cfg.WriteTimeout, b.cfg.IdleTimeout); shortest > 0 {
		b.ln.deadlines = newDeadlineSweeper(sweepTick(shortest))
		b.group.Go(b.ln.deadlines.run)
	}
	if b.tlsCfg != nil {
		limits.tooMany, limits.tooManyPerIP = nil, nil
		b.ln.wrap = b.wrapTLS(b.tlsCfg)
	}
	b.warnOverFileLimit()
	b.srv = &fasthttp.Server{
		Handler:            b.handle,
		ErrorHandler:       b.handleError,
		Name:               "timbus",
		ReadTimeout:        b.cfg.ReadTimeout,
		WriteTimeout:       b.cfg.WriteTimeout,
		IdleTimeout:        b.cfg.IdleTimeout,
		MaxRequestBodySize: b.cfg.MaxBodySize,
		ReadBufferSize:     b.cfg.MaxHeaderSize,
		CloseOnShutdown:    true,
		Logger:             fasthttpLogger{b.log},
	}
	if b.cfg.MetricsListen != "" {
		if err := b.serveOps(); err != nil {
			return err
		}
	}
	b.confirm = newConfirmer(b.group, nc)
	b.group.Go(func(context.Context) { b.serve() })
	b.group.Go(func(context.Context) { b.watchDeciders(b.cfg.RegistryInterval) })
	started := b.log.Info().Str("listen", ln.Addr().String()).Str("path", b.cfg.Path).Str("nats", RedactURLs(b.NATSURL())).
		Bool("embedded_nats", b.ns != nil).Bool("https", b.certs != nil).Bool("client_certs_required", b.cfg.TLSClientCA != "")
	if ops := b.OpsAddr(); ops != "" {
		started = started.Str("metrics_listen", ops)
	}
	started.Msg("timbus bridge started")
	return nil
}

// serve runs the callback listener until Shutdown. Should it stop before,
// the bridge is deaf: it says so in the log, in /readyz and /healthz, and
// through Done and Err, for the process to exit.
func (b *Bridge) serve() {
	defer close(b.serveDone)
	b.serveErr = b.srv.Serve(b.ln)
	if b.stopping.Load() {
		return
	}
	why := "the listener was closed"
	if b.serveErr != nil {
		why = b.serveErr.Error()
	}
	b.failed = fmt.Errorf("%w on %s: %s", ErrServe, b.ln.Addr(), why)
	b.log.Error().Err(b.failed).Msg("timbus no longer receives callbacks")
}

// Done is closed once the callback listener has stopped: during Shutdown,
// or on its own when it fails for good; Err then says why. It is never
// closed before Start.
func (b *Bridge) Done() <-chan struct{} { return b.serveDone }

// Err is nil while the bridge serves and after Shutdown. Once the callback
// listener has failed on its own, it returns why, wrapping ErrServe; the
// bridge then answers no callback and should be shut down.
func (b *Bridge) Err() error {
	select {
	case <-b.serveDone:
		return b.failed
	default:
		return nil
	}
}

// warnOverFileLimit warns when MaxConns does not keep callback connections
// below the open-file limit: Accept then waits whenever descriptors run out,
// and the NATS connection and the embedded server compete for them.
func (b *Bridge) warnOverFileLimit() {
	limit, ok := OpenFileLimit()
	if !ok || b.cfg.MaxConns == 0 || uint64(b.cfg.MaxConns)+connReserveMin <= limit {
		return
	}
	b.log.Warn().Int("max_conns", b.cfg.MaxConns).Uint64("open_file_limit", limit).
		Msg("max-conns leaves fewer than 64 descriptors under the open-file limit: when they run out, new connections wait (timbus_accept_errors_total)")
}

// serveOps serves the operations endpoints on MetricsListen.
func (b *Bridge) serveOps() error {
	ln, err := net.Listen("tcp", b.cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrListen, b.cfg.MetricsListen, err)
	}
	b.opsLn = newListener(ln, "ops", b.log, nil)
	b.opsSrv = &fasthttp.Server{
		Name:        "timbus",
		ReadTimeout: 5 * time.Second,
		IdleTimeout: time.Minute,
		Handler: func(ctx *fasthttp.RequestCtx) {
			if !b.ops(ctx) {
				writeJSON(ctx, fasthttp.StatusNotFound, map[string]string{"error": "try " + PathMetrics + ", " + PathHealth + " or " + PathReady})
			}
		},
		Logger: fasthttpLogger{b.log},
	}
	b.group.Go(func(context.Context) { _ = b.opsSrv.Serve(b.opsLn) })
	return nil
}

// OpsAddr is the address of the metrics listener, or "" without one.
func (b *Bridge) OpsAddr() string {
	if b.opsLn == nil {
		return ""
	}
	return b.opsLn.Addr().String()
}

// connectNATS connects, retrying in the background when no server could
// be reached, for the bridge to start all the same. A server that refused
// the bridge's credentials or TLS fails it instead, with its reason:
// retrying would only hide the mistake. The first attempt is made without
// retry because nats.go keeps a TLS failure of a retried connect to itself.
// With several servers, nats.go reports the last one's error: a refusal by
// one and silence from the last count as unreachable.
func (b *Bridge) connectNATS(url string, opts []nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, opts...)
	if err == nil || IsAuthError(err) {
		return nc, err
	}
	return nats.Connect(url, append(opts, nats.RetryOnFailedConnect(true))...)
}

// payloadHeadroom is room for NATS headers next to a callback body.
const payloadHeadroom = 8 << 10

// Addr is the address the HTTP listener is bound to, or "" before Start.
func (b *Bridge) Addr() string {
	if b.ln == nil {
		return ""
	}
	return b.ln.Addr().String()
}

// NATSURL is the NATS URL the bridge uses: the configured one, or the
// embedded server's client URL.
func (b *Bridge) NATSURL() string {
	if b.ns != nil {
		return b.ns.ClientURL()
	}
	return b.cfg.NATSURL
}

// Shutdown stops accepting callbacks, lets those in flight finish (each
// within its own deadline), drains the NATS connection, stops the embedded
// server and waits for every goroutine the bridge started, all within ctx:
// past its deadline, it returns an error saying what was left. It is safe
// to call more than once; later calls return nil at once.
func (b *Bridge) Shutdown(ctx context.Context) error {
	if !b.started.Load() || !b.stopping.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	// Not ready first, so that load balancers move traffic away while the
	// listener still answers.
	b.draining.Store(true)
	if b.cfg.DrainDelay > 0 {
		b.log.Info().Dur("drain_delay", b.cfg.DrainDelay).Msg("draining: not ready, still serving")
		select {
		case <-time.After(b.cfg.DrainDelay):
		case <-ctx.Done():
		}
	}
	if b.srv != nil {
		if err := b.srv.ShutdownWithContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("bridge: stop HTTP: %w", err))
		}
		// ShutdownWithContext closes only the listeners Serve has registered;
		// right after Start, Serve may not have run yet. Closing ln makes it
		// return as soon as it does.
		_ = b.ln.Close()
		select {
		case <-b.serveDone:
			// A failure before Shutdown was reported through Err already.
			if b.serveErr != nil && b.failed == nil {
				errs = append(errs, fmt.Errorf("bridge: serve: %w", b.serveErr))
			}
		case <-ctx.Done():
		}
	}
	if b.confirm != nil {
		// Callbacks still waiting past the shutdown's deadline get 503.
		b.confirm.stop()
	}
	close(b.registryStop)
	<-b.registryDone
	if b.mux != nil {
		b.mux.stop()
	}
	if b.audit != nil {
		if err := b.audit.stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// Audit records are published or given up: what the bridge still does
	// on its own (stream set-up, publishes past their deadline) can stop.
	b.group.cancel()
	if b.nc != nil {
		if err := b.nc.Drain(); err != nil {
			b.nc.Close()
		}
		select {
		case <-b.natsClosed:
		case <-ctx.Done():
			b.nc.Close()
			errs = append(errs, fmt.Errorf("bridge: drain NATS: %w", ctx.Err()))
		}
	}
	b.stopEmbeddedNATS()
	if b.opsSrv != nil {
		if err := b.opsSrv.ShutdownWithContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("bridge: stop metrics listener: %w", err))
		}
		_ = b.opsLn.Close() // as for ln above
	}
	if err := b.group.wait(ctx); err != nil {
		errs = append(errs, err)
	}
	b.log.Info().Msg("timbus bridge stopped")
	return errors.Join(errs...)
}

// startEmbeddedNATS starts the embedded server and returns how timbus's own
// connection reaches and logs into it.
func (b *Bridge) startEmbeddedNATS() (*server.Server, []nats.Option, error) {
	e, err := b.cfg.embeddedOptions()
	if err != nil {
		return nil, nil, err
	}
	if err := e.addSelf(&b.cfg); err != nil {
		return nil, nil, err
	}
	opts := e.opts
	listen := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
	if opts.Port > 0 {
		// The server reports a busy port only in its log; check it here so the
		// error is clear and immediate.
		probe, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: embedded server cannot listen on %s: %w", ErrNATS, listen, err)
		}
		probe.Close()
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: embedded server: %w", ErrNATS, err)
	}
	b.group.Go(func(context.Context) { ns.Start() })
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, nil, fmt.Errorf("%w: embedded server did not start listening on %s", ErrNATS, listen)
	}
	var connect []nats.Option
	if e.auth != nil {
		connect = append(connect, e.auth)
	}
	if opts.TLSConfig != nil {
		// The in-process pipe needs no certificate timbus may not have (the
		// file may require client certificates); see Start for why loopback
		// is preferred otherwise.
		connect = append(connect, nats.InProcessServer(ns))
	}
	if e.account != "" {
		b.natsAccount = e.account
	}
	b.log.Info().Str("url", ns.ClientURL()).Bool("auth", e.auth != nil).Msg("embedded NATS server started")
	return ns, connect, nil
}

func (b *Bridge) stopEmbeddedNATS() {
	if b.ns != nil {
		b.ns.Shutdown()
		b.ns.WaitForShutdown()
	}
}

// fasthttpLogger sends fasthttp's own messages (connection errors) to zerolog.
type fasthttpLogger struct{ log zerolog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	e := l.log.Debug()
	if e == nil {
		return
	}
	// fasthttp's connection errors quote the request bytes, Sign and all.
	e.Str(logKeyComponent, "http").Bytes(zerolog.MessageFieldName, redactSign(fmt.Appendf(nil, format, args...))).Send()
}
