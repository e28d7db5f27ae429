package bridge

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// The embedded server's options come from three places: NATSConfig (a
// nats-server configuration file, parsed by nats-server itself), then
// NATSListen and NATSStoreDir, then what timbus itself needs (MaxPayload,
// NoSigs, no logging, and a user of its own when the file sets up
// authentication). The rules:
//
//   - listen: the file's listen/host/port wins when it sets one; NATSListen
//     is then ignored when it is empty or the default, and an error when it
//     says something else.
//   - JetStream: NATSStoreDir turns it on when the file does not; when the
//     file sets a store_dir of its own, NATSStoreDir must be empty or equal.
//   - max_payload: raised to MaxBodySize plus headroom when the file's is
//     smaller.
//   - authentication: when the file sets up users (authorization users,
//     nkeys, or accounts with users), timbus adds a user of its own, an NKey
//     whose seed it makes at start and keeps in memory, with only the
//     permissions it needs. With a single token or user/password, timbus logs
//     in with those. Operator (JWT) mode and auth callout are refused: timbus
//     cannot add itself to them, and has no client credentials settings yet.

// embeddedNATS is what startEmbeddedNATS needs: the server options, and how
// timbus's own connection logs in.
type embeddedNATS struct {
	opts *server.Options
	// account is the account timbus's user lives in ("" for the global one).
	account string
	// auth logs timbus in; nil without authentication.
	auth nats.Option
}

// embeddedOptions builds the embedded server's options from the config,
// without starting anything. Validate calls it, so that check reports a bad
// file or an unsafe listen; Start calls it again to get a fresh key.
func (c *Config) embeddedOptions() (*embeddedNATS, error) {
	bad := func(field string, value any, err error) error {
		return &ConfigError{Field: field, Value: value, Err: err}
	}
	opts := &server.Options{}
	if c.NATSConfig != "" {
		var err error
		// ProcessConfigFile expands $VARIABLES from the environment; its
		// errors quote the file's position, not its values.
		if opts, err = server.ProcessConfigFile(c.NATSConfig); err != nil {
			return nil, bad("nats-config", c.NATSConfig, fmt.Errorf("%w: %w", ErrInvalidValue, err))
		}
	}
	if opts.Host != "" || opts.Port != 0 {
		host := opts.Host
		if host == "" {
			host = server.DEFAULT_HOST
		}
		port := opts.Port
		if port == 0 {
			port = server.DEFAULT_PORT
		}
		fileListen := net.JoinHostPort(host, strconv.Itoa(port))
		if c.NATSListen != "" && c.NATSListen != DefaultConfig().NATSListen && c.NATSListen != fileListen {
			return nil, bad("nats-listen", c.NATSListen, fmt.Errorf("%w: %s sets listen %s; give the address in one place only", ErrInvalidValue, c.NATSConfig, fileListen))
		}
		opts.Host, opts.Port = host, port
	} else {
		host, portText, err := net.SplitHostPort(c.NATSListen)
		if err != nil {
			return nil, bad("nats-listen", c.NATSListen, fmt.Errorf("%w: %w", ErrInvalidValue, err))
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			return nil, bad("nats-listen", c.NATSListen, fmt.Errorf("%w: bad port", ErrInvalidValue))
		}
		if port <= 0 {
			port = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, port
	}
	if c.NATSStoreDir != "" {
		if opts.StoreDir != "" && opts.StoreDir != c.NATSStoreDir {
			return nil, bad("nats-store", c.NATSStoreDir, fmt.Errorf("%w: %s sets jetstream store_dir %s; give the directory in one place only", ErrInvalidValue, c.NATSConfig, opts.StoreDir))
		}
		opts.JetStream, opts.StoreDir = true, c.NATSStoreDir
	}
	if opts.ServerName == "" {
		opts.ServerName = "timbus-embedded"
	}
	opts.NoSigs = true
	// The server's own log would bypass timbus's logger and its redaction.
	opts.NoLog = true
	if need := int32(c.MaxBodySize + payloadHeadroom); opts.MaxPayload < need {
		opts.MaxPayload = need
	}

	e := &embeddedNATS{opts: opts}
	switch {
	case len(opts.TrustedOperators) > 0 || len(opts.TrustedKeys) > 0:
		return nil, bad("nats-config", c.NATSConfig, fmt.Errorf("%w: operator (JWT) mode: timbus cannot add a user of its own there, and takes no client credentials for its embedded server; run nats-server apart and give --nats-url", ErrInvalidValue))
	case opts.AuthCallout != nil:
		return nil, bad("nats-config", c.NATSConfig, fmt.Errorf("%w: auth callout: timbus cannot add a user of its own there; run nats-server apart and give --nats-url", ErrInvalidValue))
	case len(opts.Users) > 0 || len(opts.Nkeys) > 0:
		account, err := usersAccount(opts)
		if err != nil {
			return nil, bad("nats-config", c.NATSConfig, err)
		}
		e.account = account
	case opts.Authorization != "":
		e.auth = nats.Token(opts.Authorization)
	case opts.Username != "":
		e.auth = nats.UserInfo(opts.Username, opts.Password)
	default:
		if !loopbackHost(opts.Host) {
			return nil, bad("nats-listen", net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)),
				fmt.Errorf("%w: the embedded NATS server would accept anyone beyond this host, who could answer verdicts and read every callback; bind it to 127.0.0.1 or give --nats-config with authorization users", ErrUnsafe))
		}
	}
	return e, nil
}

// addSelf adds timbus's own user to the options: an NKey made now, whose
// seed never leaves this process, so that no one can log in as timbus.
func (e *embeddedNATS) addSelf(c *Config) error {
	if len(e.opts.Users) == 0 && len(e.opts.Nkeys) == 0 {
		return nil
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return fmt.Errorf("%w: make timbus's NKey: %w", ErrNATS, err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("%w: make timbus's NKey: %w", ErrNATS, err)
	}
	user := &server.NkeyUser{Nkey: pub, Permissions: c.selfPermissions(e.opts.JetStream)}
	if e.account != "" {
		for _, acc := range e.opts.Accounts {
			if acc.Name == e.account {
				user.Account = acc
			}
		}
	}
	e.opts.Nkeys = append(e.opts.Nkeys, user)
	e.auth = nats.Nkey(pub, kp.Sign)
	return nil
}

// selfPermissions are the subjects timbus itself uses, and no more.
func (c *Config) selfPermissions(jetStream bool) *server.Permissions {
	pub := []string{
		c.SubjectPrefix + ".decide.>",
		c.SubjectPrefix + ".event.>",
		c.SubjectPrefix + ".audit.>",
		"$SRV.>", // decider discovery
	}
	shadows := []string{c.ShadowPrefix}
	for _, cc := range c.Commands {
		shadows = append(shadows, cc.ShadowPrefix)
	}
	for _, p := range shadows {
		if p != "" && !slices.Contains(pub, p+".decide.>") {
			pub = append(pub, p+".decide.>")
		}
	}
	if jetStream {
		pub = append(pub, "$JS.API.>")
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: pub},
		// Replies to requests and discovery all come to timbus's inboxes.
		Subscribe: &server.SubjectPermission{Allow: []string{nats.InboxPrefix + ">"}},
	}
}

// usersAccount finds the account the file's users share, where timbus's
// user must be for deciders to hear it. Users in several accounts cannot
// all reach timbus without exports and imports, which timbus cannot guess.
func usersAccount(opts *server.Options) (string, error) {
	seen := map[string]bool{}
	for _, u := range opts.Users {
		seen[accountName(u.Account)] = true
	}
	for _, u := range opts.Nkeys {
		seen[accountName(u.Account)] = true
	}
	if len(seen) == 1 {
		for name := range seen {
			if name == server.DEFAULT_GLOBAL_ACCOUNT {
				return "", nil
			}
			return name, nil
		}
	}
	names := make([]string, 0, len(seen))
	for name := range seen {
		names = append(names, name)
	}
	sort.Strings(names)
	return "", fmt.Errorf("%w: users are in several accounts (%s); timbus joins the account its deciders and auditors use, so put them all in one", ErrInvalidValue, strings.Join(names, ", "))
}

func accountName(acc *server.Account) string {
	if acc == nil || acc.Name == "" {
		return server.DEFAULT_GLOBAL_ACCOUNT
	}
	return acc.Name
}

// loopbackHost tells whether a listen host is reachable from this machine
// only. "" and the unspecified addresses listen everywhere.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// EmbeddedNATSAuth summarises the embedded server's authentication, for
// timbus check: never a password. "" with an external NATS.
func (c *Config) EmbeddedNATSAuth() string {
	if c.NATSURL != "" {
		return ""
	}
	e, err := c.embeddedOptions()
	if err != nil {
		return "invalid: " + err.Error()
	}
	o := e.opts
	switch {
	case len(o.Users) > 0 || len(o.Nkeys) > 0:
		account := e.account
		if account == "" {
			account = "global account"
		} else {
			account = "account " + account
		}
		text := fmt.Sprintf("%d users, %d nkeys, timbus's own NKey user in the %s", len(o.Users), len(o.Nkeys), account)
		if len(o.Accounts) > 0 {
			names := make([]string, 0, len(o.Accounts))
			for _, acc := range o.Accounts {
				names = append(names, acc.Name)
			}
			sort.Strings(names)
			text += "; accounts " + strings.Join(names, ", ")
		}
		return text
	case o.Authorization != "":
		return "one shared token (every client has every right)"
	case o.Username != "":
		return "one shared user (every client has every right)"
	default:
		return "no authentication (loopback only)"
	}
}
