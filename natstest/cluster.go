package natstest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterReadyTimeout bounds how long a cluster may take to route and elect a
// JetStream meta leader.
const clusterReadyTimeout = 30 * time.Second

// Cluster is a NATS cluster of JetStream servers routed to each other on
// loopback, each with its own store. A node can be stopped and started again
// on its store and ports, as a crashed and restarted server would be. Every
// node still running is shut down when the test ends.
//
// A Cluster is used from the test's goroutine; it is not safe for concurrent use.
type Cluster struct {
	t     testing.TB
	name  string
	nodes []*clusterNode
}

type clusterNode struct {
	opts *server.Options
	srv  *server.Server // nil while stopped
}

// StartCluster runs n servers (n ≥ 1) named "<cluster>-0" … and waits until
// they are routed and JetStream has a meta leader. Ports are picked free on
// 127.0.0.1 and kept for restarts.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: cluster of %d nodes", n)
	}
	name := fmt.Sprintf("ksync-test-%d", time.Now().UnixNano()%1e6)
	clientPorts := FreePorts(t, n)
	routePorts := FreePorts(t, n)
	routes := make([]string, n)
	for i, p := range routePorts {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	opts := make([]*server.Options, n)
	for i := range n {
		opts[i] = &server.Options{
			ServerName: fmt.Sprintf("%s-%d", name, i),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   t.TempDir(),
			Cluster: server.ClusterOpts{
				Name: name,
				Host: "127.0.0.1",
				Port: routePorts[i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
	}
	return StartClusterOf(t, opts...)
}

// StartClusterOf runs one server per opts, as given (names, addresses,
// routes, store dirs), and waits as StartCluster does until they are routed
// and JetStream has a meta leader with every node as a peer; the test fails
// if they never get there. The servers log nothing and ignore signals.
func StartClusterOf(t testing.TB, opts ...*server.Options) *Cluster {
	t.Helper()
	if len(opts) == 0 {
		t.Fatalf("natstest: cluster of no nodes")
	}
	c := &Cluster{t: t, name: opts[0].Cluster.Name}
	for _, o := range opts {
		o.NoLog, o.NoSigs = true, true
		c.nodes = append(c.nodes, &clusterNode{opts: o})
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.Stop(i)
		}
	})
	for i := range c.nodes {
		c.boot(i)
	}
	c.WaitReady()
	return c
}

// FreePorts reserves n distinct free TCP ports on loopback. They are released
// before use, so another process could take one in between; on loopback in a
// test run that is rare enough.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: free port: %v", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func (c *Cluster) boot(i int) {
	c.t.Helper()
	nd := c.nodes[i]
	s, err := server.NewServer(nd.opts)
	if err != nil {
		c.t.Fatalf("natstest: node %d: %v", i, err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		c.t.Fatalf("natstest: node %d not ready", i)
	}
	nd.srv = s
}

// Len is the number of nodes, running or not.
func (c *Cluster) Len() int { return len(c.nodes) }

// Server returns node i, or nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server { return c.nodes[i].srv }

// Name returns node i's server name, as JetStream reports stream leaders.
func (c *Cluster) Name(i int) string { return c.nodes[i].opts.ServerName }

// Index returns the index of the node named name, or -1.
func (c *Cluster) Index(name string) int {
	for i, nd := range c.nodes {
		if nd.opts.ServerName == name {
			return i
		}
	}
	return -1
}

// ClientURLs returns every node's client URL, comma-separated, as nats.Connect
// accepts them; stopped nodes are included, since they keep their ports.
func (c *Cluster) ClientURLs() string {
	urls := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", nd.opts.Port)
	}
	return strings.Join(urls, ",")
}

// Stop shuts node i down at once (no lame-duck mode), as a crash would look to
// its clients and peers; its store stays for Restart. Stopping a stopped node
// does nothing.
func (c *Cluster) Stop(i int) {
	nd := c.nodes[i]
	if nd.srv == nil {
		return
	}
	nd.srv.Shutdown()
	nd.srv.WaitForShutdown()
	nd.srv = nil
}

// Restart starts a stopped node i again on its store and ports and waits until
// the cluster is ready.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.nodes[i].srv != nil {
		c.t.Fatalf("natstest: node %d is running", i)
	}
	c.boot(i)
	c.WaitReady()
}

// WaitReady waits until every running node is routed to every other running
// node, JetStream has a meta leader that all of them follow, and the leader
// counts every running node as a peer where streams can be placed.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	deadline := time.Now().Add(clusterReadyTimeout)
	for !c.ready() {
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: cluster not ready after %s", clusterReadyTimeout)
		}
		time.Sleep(25 * time.Millisecond) // polling the servers' own state
	}
}

func (c *Cluster) ready() bool {
	running, leaders := 0, 0
	for _, nd := range c.nodes {
		if nd.srv != nil {
			running++
		}
	}
	for _, nd := range c.nodes {
		s := nd.srv
		if s == nil {
			continue
		}
		if s.NumRoutes() < running-1 || !s.JetStreamIsCurrent() {
			return false
		}
		if s.JetStreamIsLeader() {
			leaders++
			// Placement needs every peer online with its stats reported to
			// the meta leader, or an R3 stream has "no suitable peers".
			if len(s.JetStreamClusterPeers()) < running {
				return false
			}
		}
	}
	return leaders == 1
}

// Connect returns a connection to all the nodes (it fails over between them)
// and a JetStream context, closed when the test ends.
func (c *Cluster) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return connect(t, c.ClientURLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
}
