package bridge

// Fault tests on a NATS cluster: three servers in-process, routed to each
// other on 127.0.0.1 and random ports.

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/natstest"
)

// natsCluster is a running cluster; node i is servers[i].
type natsCluster struct {
	servers []*server.Server
	names   []string
}

// startCluster runs n routed servers named A, B, C… on 127.0.0.1. Without
// JetStream the first listens for routes on a random port and the others
// get a route to it; gossip completes the mesh. JetStream needs every server
// to have configured routes, the first included, so then the route ports
// are reserved up front and each server is given routes to all the others;
// each stores in its own directory, and startCluster returns once the meta
// group has a leader.
func startCluster(t *testing.T, n int, jetStream bool) *natsCluster {
	t.Helper()
	c := &natsCluster{}
	var ports []int
	if jetStream {
		for range n {
			ports = append(ports, freePort(t))
		}
	}
	var routes []*url.URL
	for i := range n {
		opts := natstest.Options()
		opts.ServerName = string(rune('A' + i))
		opts.Cluster = server.ClusterOpts{Name: "timbus-test", Host: "127.0.0.1", Port: server.RANDOM_PORT}
		opts.Routes = routes
		if jetStream {
			opts.JetStream = true
			opts.StoreDir = t.TempDir()
			opts.Cluster.Port = ports[i]
			opts.Routes = nil
			for j, p := range ports {
				if j != i {
					opts.Routes = append(opts.Routes, server.RoutesFromStr(fmt.Sprintf("nats-route://127.0.0.1:%d", p))...)
				}
			}
		}
		s := natstest.RunWith(t, opts)
		if i == 0 {
			routes = server.RoutesFromStr("nats-route://" + s.ClusterAddr().String())
		}
		c.servers = append(c.servers, s)
		c.names = append(c.names, opts.ServerName)
	}
	c.waitMesh(t, 10*time.Second)
	if jetStream {
		waitFor(t, 20*time.Second, func() error {
			leaders := 0
			for _, s := range c.servers {
				if s.JetStreamIsLeader() {
					leaders++
				}
				if !s.JetStreamIsCurrent() {
					return errNotYet
				}
			}
			if leaders != 1 {
				return errNotYet
			}
			return nil
		})
		c.waitJetStream(t, 20*time.Second)
	}
	return c
}

// waitJetStream waits until JetStream's API answers clients of every running
// server: a meta leader elected is not yet a meta leader that every server
// knows of and routes requests to.
func (c *natsCluster) waitJetStream(t *testing.T, total time.Duration) {
	t.Helper()
	for _, s := range c.servers {
		if !s.Running() {
			continue
		}
		retryJS(t, total, "JetStream API on "+s.Name(), func() error {
			nc, err := nats.Connect(s.ClientURL())
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), jsAttempt)
			defer cancel()
			_, err = js.AccountInfo(ctx)
			return err
		})
	}
}

// waitMesh waits until every running server is routed to every other one
// and a message published on any node reaches a subscriber on any other:
// interest has propagated.
func (c *natsCluster) waitMesh(t testing.TB, total time.Duration) {
	t.Helper()
	var up []*server.Server
	for _, s := range c.servers {
		if s.Running() {
			up = append(up, s)
		}
	}
	deadline := time.Now().Add(total)
	for _, s := range up {
		for s.NumRemotes() < len(up)-1 {
			if time.Now().After(deadline) {
				t.Fatalf("server %s has %d remotes, want %d", s.Name(), s.NumRemotes(), len(up)-1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for i, to := range up {
		sub := natstest.Connect(t, to)
		probe := fmt.Sprintf("probe.%d", i)
		got, err := sub.SubscribeSync(probe)
		if err != nil {
			t.Fatal(err)
		}
		sub.Flush()
		for j, from := range up {
			if i == j {
				continue
			}
			pub := natstest.Connect(t, from)
			for {
				pub.Publish(probe, nil)
				pub.Flush()
				if _, err := got.NextMsg(50 * time.Millisecond); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("messages from %s do not reach subscribers on %s", from.Name(), to.Name())
				}
			}
			pub.Close()
		}
		sub.Close()
	}
}

// node returns the server named name.
func (c *natsCluster) node(name string) *server.Server {
	for i, n := range c.names {
		if n == name {
			return c.servers[i]
		}
	}
	return nil
}

// nodeOf returns the name of the server conn is connected to.
func (c *natsCluster) nodeOf(nc *nats.Conn) string { return nc.ConnectedServerName() }

func (c *natsCluster) urls() string {
	var urls []string
	for _, s := range c.servers {
		urls = append(urls, s.ClientURL())
	}
	return strings.Join(urls, ",")
}

// TestFault_ClusterNodeLoss: deciders on two nodes of a three-node cluster,
// in one queue group, the bridge on the third.
func TestFault_ClusterNodeLoss(t *testing.T) {
	const timeout = 500 * time.Millisecond

	// Losing a deciders' node mid-run loses no callback: each is answered
	// by the decider on the node left, or with the default, in time.
	t.Run("decider node", func(t *testing.T) {
		cl := startCluster(t, 3, false)
		tb := runBridge(t, cl.node("A").ClientURL(), func(c *Config) { c.Timeout = timeout })
		var onB, onC atomic.Int64
		// B's decider dies with its node: no reconnecting elsewhere.
		ncB := deciderConn(t, cl.node("B").ClientURL(), nats.NoReconnect())
		ncC := deciderConn(t, cl.node("C").ClientURL())
		for _, d := range []struct {
			nc *nats.Conn
			n  *atomic.Int64
		}{{ncB, &onB}, {ncC, &onC}} {
			queueDecider(t, d.nc, decideOA, "deciders", func(*nats.Msg) []byte {
				d.n.Add(1)
				time.Sleep(time.Millisecond)
				return []byte(oaCreateDeny)
			})
		}
		c := newCaller(true)
		defer c.closeIdle()
		url, body := tb.callbackURL(oaCreate), sample(t, oaCreate)
		untilDecided(t, c, url, body, oaCreateDeny, 5*time.Second) // interest has reached A
		if node := cl.nodeOf(tb.Bridge.nc); node != "A" {
			t.Fatalf("bridge on %s, want A", node)
		}

		ta := newTally(timeout+answerSlack, oaCreateDeny, allowAnswer)
		var killedAt atomic.Int64 // sequence number of the first callback after the kill
		var afterKill atomic.Int64
		load(8, 600, 20*time.Second, nil, func(n int) {
			if n == 200 {
				cl.node("B").Shutdown()
				killedAt.Store(int64(n))
			}
			if ta.add(c.post(url, body)) == "decided" && killedAt.Load() > 0 {
				afterKill.Add(1)
			}
		})
		bAtKill := onB.Load()
		t.Logf("%v; B decided %d, C %d; outcomes %v", ta, bAtKill, onC.Load(), outcomeCounts(t, tb, oaCreate))
		ta.check(t)
		if bAtKill == 0 {
			t.Error("B's decider got no work before its node died")
		}
		if afterKill.Load() < 300 {
			t.Errorf("only %d callbacks decided after B died; C's decider should have taken over", afterKill.Load())
		}
		if _, dflt := ta.counts(); dflt > 8 {
			t.Errorf("%d callbacks got the default; at most those in flight on B (8) may", dflt)
		}
	})

	// Losing the bridge's own node: the bridge fails over to another node
	// and decides again; meanwhile every callback is answered in time.
	t.Run("bridge node", func(t *testing.T) {
		cl := startCluster(t, 3, false)
		// All three URLs: the client picks one at random; that is the
		// bridge's node, and the deciders go on the two others.
		tb := runBridge(t, cl.urls(), func(c *Config) { c.Timeout = timeout })
		waitFor(t, 5*time.Second, func() error {
			if !tb.Bridge.nc.IsConnected() {
				return errNotYet
			}
			return nil
		})
		home := cl.nodeOf(tb.Bridge.nc)
		for _, n := range cl.names {
			if n != home {
				queueDecider(t, deciderConn(t, cl.node(n).ClientURL()), decideOA, "deciders", replyBytes(oaCreateDeny))
			}
		}
		c := newCaller(true)
		defer c.closeIdle()
		url, body := tb.callbackURL(oaCreate), sample(t, oaCreate)
		untilDecided(t, c, url, body, oaCreateDeny, 5*time.Second)

		ta := newTally(timeout+answerSlack, oaCreateDeny, allowAnswer)
		var killed atomic.Bool
		var decidedAfter atomic.Int64
		var failedOver time.Time
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			load(8, 20000, 20*time.Second, stop, func(int) {
				if ta.add(c.post(url, body)) == "decided" && killed.Load() && tb.Bridge.nc.IsConnected() {
					decidedAfter.Add(1)
				}
			})
		}()
		time.Sleep(500 * time.Millisecond)
		killedAt := time.Now()
		cl.node(home).Shutdown()
		killed.Store(true)
		waitFor(t, 10*time.Second, func() error {
			if decidedAfter.Load() < 100 {
				return errNotYet
			}
			return nil
		})
		failedOver = time.Now()
		close(stop)
		<-done
		now := cl.nodeOf(tb.Bridge.nc)
		t.Logf("bridge on %s, moved to %s; deciding again within %v; %v; outcomes %v", home, now,
			failedOver.Sub(killedAt).Round(time.Millisecond), ta, outcomeCounts(t, tb, oaCreate))
		ta.check(t)
		if now == home || now == "" {
			t.Errorf("bridge still on %q after its node %s died", now, home)
		}
		if status, body := readiness(t, tb); status != 200 {
			t.Errorf("/readyz after fail-over: %d %s", status, body)
		}
	})
}

func replyBytes(body string) func(*nats.Msg) []byte {
	return func(*nats.Msg) []byte { return []byte(body) }
}

// TestFault_TwoBridgesAuditOnce: two bridges on nodes A and B of a
// three-node JetStream cluster (clustered JetStream, not a single server)
// share one queue group of deciders (on A and B) and one audit stream with
// three replicas. They start at the same time, both decide, and the stream
// holds every callback's record exactly once: steadily, and when the node
// holding the stream's leader (C) dies mid-run.
//
// The subtests share the cluster, nothing else: each (and each round of
// "start together") has a stream and a subject prefix of its own, so that
// what one leaves behind (records, a stream a failure kept from being
// deleted, deciders) cannot reach the next, and each checks the records of
// its own bridges by their request ids.
func TestFault_TwoBridgesAuditOnce(t *testing.T) {
	cl := startCluster(t, 3, true)
	admin := natstest.Connect(t, cl.node("A"))
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	// dropStream deletes a stream, to keep the cluster light. It is
	// housekeeping, not part of the test: a stream left behind holds
	// subjects that no other subtest uses.
	dropStream := func(t *testing.T, name string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Logf("delete stream %s: %v", name, err)
		}
	}
	// ownStream is a stream and a subject prefix for t alone, dropped when
	// t ends.
	ownStream := func(t *testing.T, name string) (StreamConfig, string) {
		t.Cleanup(func() { dropStream(t, name) })
		return StreamConfig{Name: name, MaxAge: time.Hour, Replicas: 3}, strings.ToLower(name)
	}

	// Two replicas of a deployment start at once, and both make sure the
	// stream exists: one creates it while the other looks it up.
	//
	// Regression guard. Before the fix, while a clustered
	// stream is being created, JetStream drops a stream info request
	// without an answer; ensureStream's one js.Stream call then waits for
	// its whole 10s context and Start fails with "look up stream AUDIT:
	// context deadline exceeded". Four rounds make the race likely; each
	// round costs ~0.2s when nothing goes wrong.
	t.Run("start together", func(t *testing.T) {
		for round := range 4 {
			// A stream that does not exist yet, whatever the rounds before
			// left behind.
			stream, prefix := ownStream(t, fmt.Sprintf("AUDIT_START_%d", round))
			var (
				started [2]*Bridge
				errs    [2]error
				took    [2]time.Duration
				wg      sync.WaitGroup
			)
			for i, node := range []string{"A", "B"} {
				cfg, _ := faultConfig(cl.node(node).ClientURL(), func(c *Config) {
					c.AuditStream = stream
					c.SubjectPrefix = prefix
				})
				b, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				started[i] = b
				wg.Add(1)
				go func() {
					defer wg.Done()
					start := time.Now()
					errs[i] = b.Start(context.Background())
					took[i] = time.Since(start)
				}()
			}
			wg.Wait()
			failed := false
			for i, b := range started {
				if errs[i] != nil {
					failed = true
					t.Errorf("round %d: bridge %d, started at the same time as the other, failed after %v: %v",
						round, i, took[i].Round(time.Millisecond), errs[i])
					continue
				}
				// An answer proves the listener is served: Shutdown right
				// after Start has a bug of its own (TestFault_ShutdownRightAfterStart).
				get(t, "http://"+b.Addr()+PathHealth)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := b.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
				cancel()
			}
			if failed {
				return
			}
			dropStream(t, stream.Name)
		}
	})

	t.Run("steady", func(t *testing.T) {
		stream, prefix := ownStream(t, "AUDIT_STEADY")
		auditOnce(t, cl, stream, prefix, nil)
	})

	// The last subtest: C stays down.
	t.Run("stream leader dies", func(t *testing.T) {
		stream, prefix := ownStream(t, "AUDIT_LEADER_DIES")
		auditOnce(t, cl, stream, prefix, func(n, perBridge int) {
			if n == 0 {
				moveStreamLeader(t, admin, stream.Name, "C")
			}
			if n == perBridge {
				cl.node("C").Shutdown()
			}
		})
	})
}

// auditOnce starts a bridge on A and one on B with the audit stream and
// subject prefix, and deciders for that prefix on A and B in one queue
// group; sends perBridge callbacks through each, calling fault(n, perBridge)
// before callback n (and with n 0 before the first); and checks that the
// stream holds every callback's record exactly once, and no record of
// another bridge.
func auditOnce(t *testing.T, cl *natsCluster, stream StreamConfig, prefix string, fault func(n, perBridge int)) {
	decide := protocol.Subject(prefix, protocol.KindDecide, testApp, oaCreate)
	for _, node := range []string{"A", "B"} {
		queueDecider(t, deciderConn(t, cl.node(node).ClientURL()), decide, "deciders", replyBytes(oaCreateDeny))
	}
	var bridges [2]*testBridge
	for i, node := range []string{"A", "B"} {
		bridges[i] = runBridge(t, cl.node(node).ClientURL(), func(c *Config) {
			c.Timeout = time.Second
			c.AuditStream = stream
			c.SubjectPrefix = prefix
		})
	}
	c := newCaller(true)
	defer c.closeIdle()
	for _, tb := range bridges {
		untilDecided(t, c, tb.callbackURL(oaCreate), sample(t, oaCreate), oaCreateDeny, 5*time.Second)
	}
	const perBridge = 150
	if fault != nil {
		fault(0, perBridge)
	}
	tallies := [2]*tally{}
	for i, tb := range bridges {
		tallies[i] = newTally(tb.cfg.Timeout+answerSlack, oaCreateDeny, allowAnswer)
	}
	load(8, 2*perBridge, 20*time.Second, nil, func(n int) {
		if fault != nil {
			fault(n, perBridge)
		}
		i := n % 2
		tallies[i].add(c.post(bridges[i].callbackURL(oaCreate), sample(t, oaCreate)))
	})
	var handled [2]int // callbacks each bridge answered, warm-up included
	for i, ta := range tallies {
		t.Logf("bridge %d: %v", i, ta)
		ta.check(t)
		if decided, _ := ta.counts(); decided < perBridge*9/10 {
			t.Errorf("bridge %d: only %d of %d decided", i, decided, perBridge)
		}
		for _, n := range outcomeCounts(t, bridges[i], oaCreate) {
			handled[i] += n
		}
	}

	// Every record acknowledged (or given up on) within 10s, then Shutdown.
	// The caller's idle connections go first: fasthttp gives a connection
	// that never sent a request ReadTimeout (5s) before Shutdown closes it.
	c.closeIdle()
	settleBy := time.Now().Add(10 * time.Second)
	for i, tb := range bridges {
		var published, failed int
		settled := func() bool {
			_, text := get(t, tb.base+PathMetrics)
			published, _ = strconv.Atoi(metricValue(t, text, "timbus_audit_published_total"))
			failed, _ = strconv.Atoi(metricValue(t, text, "timbus_audit_failed_total"))
			return published+failed >= tallies[i].total()+1 // +1: the warm-up callback
		}
		for !settled() && time.Now().Before(settleBy) {
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("bridge %d: audit records acknowledged %d, failed %d", i, published, failed)
		if !settled() {
			t.Errorf("bridge %d: %d audit records neither acknowledged nor failed 10s after the last callback", i, tallies[i].total()+1-published-failed)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if err := tb.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
	}

	perID, late := readAudit(t, cl.node("A"), stream.Name, handled[0]+handled[1])
	var dup []string
	for id, n := range perID {
		if n != 1 {
			dup = append(dup, fmt.Sprintf("%s×%d", id, n))
		}
	}
	// Request ids start with a prefix of the bridge's own.
	byBridge := map[string]int{}
	for id := range perID {
		byBridge[id[:strings.IndexByte(id, '-')+1]]++
	}
	t.Logf("stream: records of %d callbacks, %d late records; per bridge id prefix %v; callbacks handled %v", len(perID), late, byBridge, handled)
	if len(dup) > 0 {
		t.Errorf("records not exactly once: %v", dup)
	}
	for i, tb := range bridges {
		if got := byBridge[tb.ids.prefix]; got != handled[i] {
			t.Errorf("bridge %d (ids %s…): records of %d callbacks in the stream, %d callbacks handled", i, tb.ids.prefix, got, handled[i])
		}
		delete(byBridge, tb.ids.prefix)
	}
	if len(byBridge) > 0 {
		t.Errorf("records from bridges other than this test's two: %v", byBridge)
	}
}

// readAudit reads every record of the audit stream through s, once it
// holds the records of at least want callbacks, and counts the callbacks'
// records per request id; late records are counted apart, refusals not at
// all. It waits for the stream to answer (see retryJS): a stream whose leader
// has just moved, or a consumer whose interest has not reached s yet, answers
// "no responders" for a while.
func readAudit(t *testing.T, s *server.Server, name string, want int) (perID map[string]int, late int) {
	t.Helper()
	if replicas := streamInfo(t, s.ClientURL(), name).Config.Replicas; replicas != 3 {
		t.Errorf("stream has %d replicas, want 3", replicas)
	}
	count := func(recs []protocol.AuditRecord) {
		perID, late = map[string]int{}, 0
		for _, r := range recs {
			switch r.Outcome {
			case string(protocol.OutcomeLate):
				late++
			case string(protocol.OutcomeRejected):
			default:
				perID[r.RequestID]++
			}
		}
	}
	retryJS(t, 30*time.Second, "read stream "+name, func() error {
		recs, err := streamRecords(t, s.ClientURL(), name)
		if err != nil {
			return err
		}
		if count(recs); len(perID) < want {
			return fmt.Errorf("records of %d of %d callbacks stored", len(perID), want)
		}
		return nil
	})
	return perID, late
}

// moveStreamLeader makes the server named to the leader of stream.
func moveStreamLeader(t *testing.T, nc *nats.Conn, stream, to string) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	leader := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return ""
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return ""
		}
		return info.Cluster.Leader
	}
	waitFor(t, 15*time.Second, func() error {
		if l := leader(); l == to {
			return nil
		} else if l != "" {
			req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, to)
			if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, []byte(req), 5*time.Second); err != nil {
				t.Logf("step down: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		return errNotYet
	})
}
