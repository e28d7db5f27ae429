package bridge

import "errors"

// Sentinel errors. Callers test them with errors.Is; ConfigError and the
// errors of Start wrap them with the details.
var (
	ErrMissing        = errors.New("bridge: missing setting")
	ErrInvalidValue   = errors.New("bridge: invalid setting")
	ErrNoApps         = errors.New("bridge: no SdkAppid configured")
	ErrInvalidTimeout = errors.New("bridge: invalid timeout")
	ErrInvalidVerdict = errors.New("bridge: invalid verdict")
	ErrStarted        = errors.New("bridge: already started")
	ErrNATS           = errors.New("bridge: NATS unavailable")
	ErrListen         = errors.New("bridge: cannot listen")
	ErrServe          = errors.New("bridge: stopped serving callbacks")
	// ErrUnsafe: the settings would open timbus to anyone on the network.
	ErrUnsafe = errors.New("bridge: unsafe setting")
)
