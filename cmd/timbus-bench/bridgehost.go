package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/timbus-dev/timbus/bridge"
)

// runBridgeHost runs package bridge in this process, configured as the
// benchmark runs `timbus serve`, so that its CPU can be profiled: the timbus
// binary has no profiling switch. Only --cpuprofile uses it; the measured
// timbus setups always run the real binary.
func runBridgeHost(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP address")
	natsURL := fs.String("nats-url", "", "NATS servers; empty runs the embedded server")
	natsListen := fs.String("nats-listen", "127.0.0.1:4222", "embedded NATS address")
	sdkappid := fs.String("sdkappid", benchApp, "served SdkAppid")
	def := fs.String("default", "deny", "default verdict")
	logLevel := fs.String("log-level", "info", "zerolog level")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	ctx, stop := untilSignal(ctx)
	defer stop()

	cfg := bridge.DefaultConfig()
	cfg.Listen = *listen
	cfg.NATSURL = *natsURL
	cfg.NATSListen = *natsListen
	for _, id := range strings.Split(*sdkappid, ",") {
		cfg.Apps = append(cfg.Apps, bridge.App{ID: id})
	}
	v, err := bridge.ParseVerdict(*def)
	if err != nil {
		fmt.Fprintln(stderr, "bridge:", err)
		return exitUsage
	}
	cfg.Default = v
	lvl, err := zerolog.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "bridge:", err)
		return exitUsage
	}
	// As timbus serve logs: JSON lines with a timestamp, on stderr.
	cfg.Logger = zerolog.New(zerolog.SyncWriter(os.Stderr)).Level(lvl).With().Timestamp().Logger()
	b, err := bridge.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "bridge:", err)
		return exitUsage
	}
	stopProfile, err := startCPUProfile(*cpuprofile)
	if err != nil {
		fmt.Fprintln(stderr, "bridge:", err)
		return exitFailure
	}
	defer stopProfile()
	if err := b.Start(ctx); err != nil {
		fmt.Fprintln(stderr, "bridge:", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Shutdown(stopCtx); err != nil {
		fmt.Fprintln(stderr, "bridge:", err)
		return exitFailure
	}
	return exitOK
}

// startCPUProfile profiles this process into path until the returned func
// runs; an empty path profiles nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
