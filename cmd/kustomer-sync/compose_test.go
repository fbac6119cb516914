package main

// No Docker engine runs where the tests run, so these tests check
// docker-compose.yml against what it names instead: every kustomer-sync
// service's command line and environment against the real command tree, the
// NATS services' command lines by running them as a cluster of embedded
// servers, Prometheus' scrape targets against the workers' metrics address,
// and every file the services mount.

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/subject"
)

// composeFile is the part of docker-compose.yml these tests read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image           string                    `yaml:"image"`
	Build           *composeBuild             `yaml:"build"`
	Command         []string                  `yaml:"command"`
	Environment     map[string]string         `yaml:"environment"`
	Volumes         []string                  `yaml:"volumes"`
	DependsOn       map[string]composeDepends `yaml:"depends_on"`
	Healthcheck     *composeHealthcheck       `yaml:"healthcheck"`
	Restart         string                    `yaml:"restart"`
	StopGracePeriod string                    `yaml:"stop_grace_period"`
	Deploy          struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
}

type composeBuild struct {
	Context    string            `yaml:"context"`
	Dockerfile string            `yaml:"dockerfile"`
	Args       map[string]string `yaml:"args"`
}

type composeDepends struct {
	Condition string `yaml:"condition"`
}

type composeHealthcheck struct {
	Test []string `yaml:"test"`
}

// composeStopGraceDefault is how long compose waits after SIGTERM before
// SIGKILL when a service sets no stop_grace_period.
const composeStopGraceDefault = 10 * time.Second

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	require.NoError(t, err)
	var cf composeFile
	require.NoError(t, yaml.Unmarshal(data, &cf), "docker-compose.yml")
	require.NotEmpty(t, cf.Services, "docker-compose.yml: no services")
	return cf
}

// builtHere reports whether svc runs the image of the repository's Dockerfile.
func builtHere(svc composeService) bool {
	return svc.Build != nil && filepath.Clean(svc.Build.Context) == "." &&
		(svc.Build.Dockerfile == "" || svc.Build.Dockerfile == "Dockerfile")
}

// servicesWhere returns the names of cf's services for which keep is true, sorted.
func servicesWhere(cf composeFile, keep func(composeService) bool) []string {
	var names []string
	for name, svc := range cf.Services {
		if keep(svc) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func isNATS(svc composeService) bool { return strings.HasPrefix(svc.Image, "nats:") }

// bindMount splits a short-syntax volume "SOURCE:TARGET[:MODE]"; bind is true
// when SOURCE is a host path (relative to the compose file) rather than a
// named volume.
func bindMount(v string) (source, target string, bind bool) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 {
		return "", v, false
	}
	source, target = parts[0], parts[1]
	return source, target, strings.HasPrefix(source, ".") || strings.HasPrefix(source, "/")
}

// hostPath returns the host file that containerPath is in svc's container,
// through its bind mounts, or "" when no bind mount holds it.
func hostPath(svc composeService, containerPath string) string {
	for _, v := range svc.Volumes {
		source, target, bind := bindMount(v)
		if !bind {
			continue
		}
		if rel, err := filepath.Rel(target, containerPath); err == nil && !strings.HasPrefix(rel, "..") {
			return filepath.Join(repoRoot, source, rel)
		}
	}
	return ""
}

// requireMountedFile fails unless containerPath is in svc's container through
// a bind mount of an existing host file, and returns that file.
func requireMountedFile(t *testing.T, name string, svc composeService, what, containerPath string) string {
	t.Helper()
	require.True(t, filepath.IsAbs(containerPath), "service %s: %s %q: want an absolute path in the container (the image's working directory holds nothing)", name, what, containerPath)
	host := hostPath(svc, containerPath)
	require.NotEmpty(t, host, "service %s: %s %q is in no bind mount of the service", name, what, containerPath)
	st, err := os.Stat(host)
	require.NoError(t, err, "service %s: %s %q", name, what, containerPath)
	require.False(t, st.IsDir(), "service %s: %s %q is a directory", name, what, containerPath)
	return host
}

// envNamesRe finds the variables a flag's help names: "(env KSYNC_X)",
// "(or set KUSTOMER_API_KEY)".
var envNamesRe = regexp.MustCompile(`\b(?:KSYNC|NATS|KUSTOMER)_[A-Z0-9_]+\b`)

// envNames are the environment variables cmd reads: those bound to its flags
// (and the global ones) and those its flags' help names.
func envNames(cmd *cobra.Command) map[string]bool {
	names := map[string]bool{}
	visit := func(f *pflag.Flag) {
		for _, k := range f.Annotations[envAnnotation] {
			names[k] = true
		}
		for _, k := range envNamesRe.FindAllString(f.Usage, -1) {
			names[k] = true
		}
	}
	cmd.Flags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	return names
}

// findCommand finds the kustomer-sync command args name in a fresh command
// tree; rest are its flags and arguments.
func findCommand(args []string) (*cobra.Command, []string, error) {
	a := &app{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	root := a.rootCommand()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return nil, nil, err
	}
	if cmd == root || cmd.HasSubCommands() {
		return nil, nil, fmt.Errorf("%q names no kustomer-sync command (see 'kustomer-sync --help')", args)
	}
	return cmd, rest, nil
}

// parsedService is a kustomer-sync service's command as the binary would
// parse it in its container: flags, then its environment.
type parsedService struct {
	name string
	svc  composeService
	cmd  *cobra.Command
	args []string // positional arguments
}

// flag returns the value of cmd's flag name after the command line and the
// environment, as the command would see it.
func (p parsedService) flag(t *testing.T, name string) string {
	t.Helper()
	f := p.cmd.Flags().Lookup(name)
	require.NotNil(t, f, "service %s: %s has no --%s", p.name, p.cmd.CommandPath(), name)
	return f.Value.String()
}

// parseService runs svc's command line through the real command tree with
// svc's environment (and nothing else of this process's) set, as far as the
// command's own checks before it starts. It refuses unknown commands, unknown
// flags, bad values of flags or variables, wrong arguments, and variables the
// command does not read.
func parseService(t *testing.T, name string, svc composeService) (parsedService, error) {
	t.Helper()
	if len(svc.Command) == 0 {
		return parsedService{}, fmt.Errorf("service %s: no command (the image's default is 'run' with no flags)", name)
	}
	cmd, _, err := findCommand(svc.Command)
	if err != nil {
		return parsedService{}, fmt.Errorf("service %s: command: %w", name, err)
	}
	reads := envNames(cmd)
	for k := range svc.Environment {
		if !reads[k] {
			return parsedService{}, fmt.Errorf("service %s: %s does not read the environment variable %s", name, cmd.CommandPath(), k)
		}
	}
	for k := range reads {
		t.Setenv(k, svc.Environment[k]) // empty counts as unset
	}
	// Again, now that the environment is the container's: some defaults
	// come from it.
	cmd, rest, err := findCommand(svc.Command)
	if err != nil {
		return parsedService{}, fmt.Errorf("service %s: command: %w", name, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return parsedService{}, fmt.Errorf("service %s: command %q: %w", name, svc.Command, err)
	}
	args := cmd.Flags().Args()
	if err := cmd.ValidateArgs(args); err != nil {
		return parsedService{}, fmt.Errorf("service %s: command %q: %w", name, svc.Command, err)
	}
	if err := cmd.Root().PersistentPreRunE(cmd, args); err != nil {
		return parsedService{}, fmt.Errorf("service %s: command %q with its environment: %w", name, svc.Command, err)
	}
	return parsedService{name: name, svc: svc, cmd: cmd, args: args}, nil
}

// mustParseService is parseService failing the test on error.
func mustParseService(t *testing.T, name string, svc composeService) parsedService {
	t.Helper()
	p, err := parseService(t, name, svc)
	require.NoError(t, err)
	return p
}

// natsNode is a NATS service's command line as nats-server parses it.
type natsNode struct {
	name string
	svc  composeService
	opts *server.Options
}

func parseNATS(t *testing.T, name string, svc composeService) natsNode {
	t.Helper()
	args := svc.Command
	if len(args) > 0 && args[0] == "nats-server" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	noop := func() {}
	opts, err := server.ConfigureOptions(fs, args, noop, noop, noop)
	require.NoError(t, err, "service %s: nats-server %q", name, args)
	require.NotNil(t, opts, "service %s: nats-server %q only prints help or its version", name, args)
	return natsNode{name: name, svc: svc, opts: opts}
}

func (n natsNode) clientPort() int {
	if n.opts.Port == 0 {
		return server.DEFAULT_PORT
	}
	return n.opts.Port
}

// healthURL is the URL of n's health check.
func healthURL(t *testing.T, name string, hc *composeHealthcheck) *url.URL {
	t.Helper()
	require.NotNil(t, hc, "service %s: no healthcheck", name)
	require.True(t, len(hc.Test) > 1 && hc.Test[0] == "CMD", "service %s: healthcheck %q: want exec form [\"CMD\", ...]", name, hc.Test)
	for _, arg := range hc.Test[1:] {
		if strings.HasPrefix(arg, "http://") {
			u, err := url.Parse(arg)
			require.NoError(t, err, "service %s: healthcheck", name)
			return u
		}
	}
	t.Fatalf("service %s: healthcheck %q requests no http:// URL", name, hc.Test)
	return nil
}

// requirePort fails unless u is on loopback at port want.
func requirePort(t *testing.T, name string, u *url.URL, want int) {
	t.Helper()
	require.Contains(t, []string{"127.0.0.1", "localhost"}, u.Hostname(), "service %s: %s", name, u)
	require.Equal(t, strconv.Itoa(want), u.Port(), "service %s: %s is not the port the service listens on", name, u)
}

func TestComposeNATSServicesFormAJetStreamCluster(t *testing.T) {
	cf := loadCompose(t)
	names := servicesWhere(cf, isNATS)
	require.Len(t, names, 3, "docker-compose.yml: want a 3-node NATS cluster")
	nodes := make([]natsNode, len(names))
	index := map[string]int{}
	for i, name := range names {
		nodes[i] = parseNATS(t, name, cf.Services[name])
		index[name] = i
	}

	// The image runs the nats-server release whose flags these are.
	serverMinor := server.VERSION[:strings.LastIndex(server.VERSION, ".")]
	for i, nd := range nodes {
		o := nd.opts
		require.Equal(t, "nats:"+serverMinor+"-alpine", nd.svc.Image, "service %s: the image's nats-server should be the release in go.mod (%s), whose flags this test checks", nd.name, server.VERSION)
		require.Equal(t, "unless-stopped", nd.svc.Restart, "service %s: restart", nd.name)
		require.True(t, o.JetStream, "service %s: JetStream is off (--jetstream)", nd.name)
		require.NotEmpty(t, o.ServerName, "service %s: no --name", nd.name)
		require.NotEmpty(t, o.Cluster.Name, "service %s: no --cluster_name", nd.name)
		require.Equal(t, nodes[0].opts.Cluster.Name, o.Cluster.Name, "service %s: --cluster_name", nd.name)
		require.NotZero(t, o.Cluster.Port, "service %s: no --cluster listen address", nd.name)
		for j := range i {
			require.NotEqual(t, nodes[j].opts.ServerName, o.ServerName, "services %s and %s: same --name", nodes[j].name, nd.name)
		}
		// The store survives a restart: it is a named volume.
		persisted := false
		for _, v := range nd.svc.Volumes {
			source, target, bind := bindMount(v)
			if !bind && target == o.StoreDir {
				require.Contains(t, cf.Volumes, source, "service %s: volume %q is not declared under volumes:", nd.name, source)
				persisted = true
			}
		}
		require.True(t, persisted, "service %s: --store_dir %q is not a volume", nd.name, o.StoreDir)
		// Routes name the other nodes at their cluster ports.
		var routed []string
		for _, r := range o.Routes {
			j, ok := index[r.Hostname()]
			require.True(t, ok, "service %s: route %s is no NATS service", nd.name, r)
			require.Equal(t, strconv.Itoa(nodes[j].opts.Cluster.Port), r.Port(), "service %s: route %s: %s's cluster port is %d", nd.name, r, nodes[j].name, nodes[j].opts.Cluster.Port)
			routed = append(routed, r.Hostname())
		}
		for _, other := range names {
			require.True(t, other == nd.name || slices.Contains(routed, other), "service %s: no route to %s", nd.name, other)
		}
		requirePort(t, nd.name, healthURL(t, nd.name, nd.svc.Healthcheck), o.HTTPPort)
	}

	// Run them: host names become 127.0.0.1, ports free ones, stores temporary.
	ports := natstest.FreePorts(t, 3*len(nodes))
	clientPort := func(i int) int { return ports[3*i] }
	routePort := func(i int) int { return ports[3*i+1] }
	httpPort := func(i int) int { return ports[3*i+2] }
	opts := make([]*server.Options, len(nodes))
	for i, nd := range nodes {
		o := nd.opts
		o.Host, o.Port = "127.0.0.1", clientPort(i)
		o.Cluster.Host, o.Cluster.Port = "127.0.0.1", routePort(i)
		o.HTTPHost, o.HTTPPort = "127.0.0.1", httpPort(i)
		o.StoreDir = t.TempDir()
		for _, r := range o.Routes {
			r.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(routePort(index[r.Hostname()])))
		}
		opts[i] = o
	}
	c := natstest.StartClusterOf(t, opts...)

	// Each node's health check passes, as compose will ask it.
	for i, nd := range nodes {
		u := healthURL(t, nd.name, nd.svc.Healthcheck)
		u.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort(i)))
		requireEventually200(t, nd.name, u.String())
	}

	// And it places a stream with as many replicas as the workers ask for.
	worker := mustParseService(t, "worker", cf.Services["worker"])
	replicas, err := strconv.Atoi(worker.flag(t, "stream-replicas"))
	require.NoError(t, err)
	_, js := c.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "COMPOSE_CHECK", Subjects: []string{"compose.check"}, Replicas: replicas})
	require.NoError(t, err, "an R%d stream on the compose cluster", replicas)
}

// requireEventually200 polls url until it answers 200.
func requireEventually200(t *testing.T, name, url string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	require.Eventually(t, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "service %s: health check %s never answered 200", name, url)
}

func TestComposeServicesRunTheCLIAsItIs(t *testing.T) {
	cf := loadCompose(t)
	ours := servicesWhere(cf, builtHere)
	require.NotEmpty(t, ours, "docker-compose.yml: no service is built from the Dockerfile")
	natsNames := servicesWhere(cf, isNATS)
	nodes := map[string]natsNode{}
	for _, name := range natsNames {
		nodes[name] = parseNATS(t, name, cf.Services[name])
	}

	// The image's build arguments are ones the Dockerfile declares.
	declared := dockerfileArgs(t)
	for _, name := range ours {
		for arg := range cf.Services[name].Build.Args {
			require.Contains(t, declared, arg, "service %s: build argument %s is not an ARG of the Dockerfile", name, arg)
		}
	}

	parsed := map[string]parsedService{}
	byCommand := map[string][]string{}
	for _, name := range ours {
		p := mustParseService(t, name, cf.Services[name])
		parsed[name] = p
		byCommand[p.cmd.Name()] = append(byCommand[p.cmd.Name()], name)
		// Files it names are mounted into its container.
		for _, fl := range []string{"config", "kustomer-api-key-file", "context", "nats-creds", "nats-nkey", "nats-ca", "nats-cert", "nats-key"} {
			if f := p.cmd.Flags().Lookup(fl); f != nil && f.Value.String() != "" {
				requireMountedFile(t, name, p.svc, "--"+fl, f.Value.String())
			}
		}
		// NATS URLs are the cluster's nodes at their client ports.
		if f := p.cmd.Flags().Lookup("nats-url"); f != nil && p.cmd.Name() != "sandbox" {
			require.NotEmpty(t, f.Value.String(), "service %s: no NATS_URL: it would start an embedded server", name)
			var hosts []string
			for _, s := range strings.Split(f.Value.String(), ",") {
				u, err := url.Parse(strings.TrimSpace(s))
				require.NoError(t, err, "service %s: NATS_URL", name)
				nd, ok := nodes[u.Hostname()]
				require.True(t, ok, "service %s: NATS URL %s is no NATS service", name, u)
				require.Equal(t, strconv.Itoa(nd.clientPort()), u.Port(), "service %s: NATS URL %s", name, u)
				hosts = append(hosts, u.Hostname())
			}
			slices.Sort(hosts)
			require.Equal(t, natsNames, hosts, "service %s: NATS_URL should list every node, to fail over", name)
			for _, n := range natsNames {
				require.Equal(t, "service_healthy", p.svc.DependsOn[n].Condition, "service %s: depends_on %s", name, n)
			}
		}
	}

	require.Len(t, byCommand["run"], 1, "docker-compose.yml: want one worker service (with replicas)")
	require.Len(t, byCommand["sandbox"], 1, "docker-compose.yml: want one sandbox service")
	worker := parsed[byCommand["run"][0]]
	sandbox := parsed[byCommand["sandbox"][0]]

	t.Run("worker", func(t *testing.T) {
		w := worker.svc
		require.Equal(t, 3, w.Deploy.Replicas, "service %s: replicas", worker.name)
		require.Equal(t, "unless-stopped", w.Restart, "service %s: restart", worker.name)
		require.Equal(t, strconv.Itoa(len(natsNames)), worker.flag(t, "stream-replicas"), "service %s: streams should be replicated on every NATS node", worker.name)
		require.Equal(t, "false", worker.flag(t, "sandbox"), "service %s", worker.name)

		// SIGTERM drains within --drain-timeout; compose must not SIGKILL first.
		drain, err := time.ParseDuration(worker.flag(t, "drain-timeout"))
		require.NoError(t, err)
		grace := composeStopGraceDefault
		if w.StopGracePeriod != "" {
			grace, err = time.ParseDuration(w.StopGracePeriod)
			require.NoError(t, err, "service %s: stop_grace_period", worker.name)
		}
		require.Greater(t, grace, drain, "service %s: stop_grace_period must exceed the drain timeout", worker.name)

		// Kustomer is the sandbox service, with the key it wants.
		base, err := url.Parse(worker.flag(t, "kustomer-base-url"))
		require.NoError(t, err)
		require.Equal(t, sandbox.name, base.Hostname(), "service %s: KUSTOMER_BASE_URL", worker.name)
		_, sandboxPort, err := net.SplitHostPort(sandbox.flag(t, "addr"))
		require.NoError(t, err)
		require.Equal(t, sandboxPort, base.Port(), "service %s: KUSTOMER_BASE_URL's port is not the sandbox's --addr", worker.name)
		require.Contains(t, []string{"", "0.0.0.0"}, strings.Split(sandbox.flag(t, "addr"), ":")[0], "service %s: --addr must listen beyond loopback", sandbox.name)
		require.Equal(t, sandbox.flag(t, "api-key"), w.Environment["KUSTOMER_API_KEY"], "service %s: KUSTOMER_API_KEY is not the sandbox's --api-key", worker.name)
		require.Contains(t, w.DependsOn, sandbox.name, "service %s: depends_on", worker.name)

		// The workflow config loads.
		cfg := requireMountedFile(t, worker.name, w, "--config", worker.flag(t, "config"))
		_, err = mapping.Load(cfg)
		require.NoError(t, err)

		// Its health check is the image's binary asking the admin server the
		// worker runs, on loopback: the image has no shell nor wget.
		hc := w.Healthcheck
		require.NotNil(t, hc, "service %s: no healthcheck", worker.name)
		require.True(t, len(hc.Test) > 2 && hc.Test[0] == "CMD", "service %s: healthcheck %q: want [\"CMD\", the binary, \"healthcheck\"]", worker.name, hc.Test)
		require.Contains(t, dockerfileBinaries(t), hc.Test[1], "service %s: healthcheck runs %s, which the image does not hold", worker.name, hc.Test[1])
		t.Setenv("KSYNC_ADMIN_ADDR", w.Environment["KSYNC_ADMIN_ADDR"])
		check, rest, err := findCommand(hc.Test[2:])
		require.NoError(t, err, "service %s: healthcheck", worker.name)
		require.Equal(t, "healthcheck", check.Name(), "service %s: healthcheck %q", worker.name, hc.Test)
		require.NoError(t, check.ParseFlags(rest), "service %s: healthcheck %q", worker.name, hc.Test)
		require.NoError(t, check.ValidateArgs(check.Flags().Args()), "service %s: healthcheck %q", worker.name, hc.Test)
		require.NoError(t, check.Root().PersistentPreRunE(check, check.Flags().Args()), "service %s: healthcheck with the worker's environment", worker.name)
		asked, err := readyzURL(check.Flags().Lookup("admin-addr").Value.String())
		require.NoError(t, err)
		_, adminPort, err := net.SplitHostPort(worker.flag(t, "admin-addr"))
		require.NoError(t, err)
		require.Equal(t, "http://127.0.0.1:"+adminPort+"/readyz", asked, "service %s: the healthcheck asks another address than the admin server's", worker.name)
	})

	t.Run("publishers", func(t *testing.T) {
		cfg, err := mapping.Load(requireMountedFile(t, worker.name, worker.svc, "--config", worker.flag(t, "config")))
		require.NoError(t, err)
		var subjects []string
		for _, wf := range cfg.Workflows {
			subjects = append(subjects, wf.Subject)
		}
		var published []string
		for _, name := range byCommand["publish"] {
			p := parsed[name]
			require.Len(t, p.args, 1, "service %s: publish reads stdin without a FILE; a container has none", name)
			host := requireMountedFile(t, name, p.svc, "FILE", p.args[0])
			rel, err := filepath.Rel(repoRoot, host)
			require.NoError(t, err)
			published = append(published, filepath.ToSlash(rel))
			subj := p.flag(t, "subject")
			require.True(t, subject.CoveredBy(subjects, subj), "service %s: --subject %s is no workflow's subject in %s (%s)", name, subj, worker.flag(t, "config"), strings.Join(subjects, ", "))
			require.Equal(t, "on-failure", p.svc.Restart, "service %s: until a worker created the stream, publish fails; it must be restarted", name)
			require.Equal(t, "service_healthy", p.svc.DependsOn[worker.name].Condition, "service %s: depends_on %s: publish before a worker is ready and it fails", name, worker.name)
		}
		require.Contains(t, published, "testdata/leads.jsonl")
		require.Contains(t, published, "testdata/batch.json")
	})

	t.Run("prometheus", func(t *testing.T) {
		names := servicesWhere(cf, func(s composeService) bool { return strings.HasPrefix(s.Image, "prom/prometheus:") })
		require.Len(t, names, 1, "docker-compose.yml: want one Prometheus service")
		prom := cf.Services[names[0]]
		host := requireMountedFile(t, names[0], prom, "config", "/etc/prometheus/prometheus.yml")
		data, err := os.ReadFile(host)
		require.NoError(t, err)
		var pc promConfig
		require.NoError(t, yaml.Unmarshal(data, &pc), host)

		metrics := worker.flag(t, "admin-addr")
		require.NotEmpty(t, metrics, "service %s: no metrics address", worker.name)
		mhost, mport, err := net.SplitHostPort(metrics)
		require.NoError(t, err)
		require.Contains(t, []string{"", "0.0.0.0"}, mhost, "service %s: metrics on %s cannot be scraped from another container", worker.name, metrics)
		scraped := false
		for _, sc := range pc.ScrapeConfigs {
			for _, d := range sc.DNSSDConfigs {
				if slices.Contains(d.Names, worker.name) {
					require.Equal(t, "A", d.Type, "%s: dns_sd_configs type", host)
					require.Equal(t, mport, strconv.Itoa(d.Port), "%s: scrapes %s on a port its metrics are not on (%s)", host, worker.name, metrics)
					scraped = true
				}
			}
		}
		require.True(t, scraped, "%s: no dns_sd_configs entry for %s (one A record per replica)", host, worker.name)

		// The alert rules load and name metrics (and labels) the workers' registry
		// exports, and jobs that are scraped.
		require.NotEmpty(t, pc.RuleFiles, "%s: no rule_files", host)
		exported := exportedMetrics(t)
		for _, rf := range pc.RuleFiles {
			rules := requireMountedFile(t, names[0], prom, "rule file", rf)
			data, err := os.ReadFile(rules)
			require.NoError(t, err)
			var rc struct {
				Groups []struct {
					Rules []struct {
						Alert string `yaml:"alert"`
						Expr  string `yaml:"expr"`
					} `yaml:"rules"`
				} `yaml:"groups"`
			}
			require.NoError(t, yaml.Unmarshal(data, &rc), rules)
			require.NotEmpty(t, rc.Groups, rules)
			for _, g := range rc.Groups {
				for _, r := range g.Rules {
					require.NotEmpty(t, r.Alert, "%s: a rule without a name", rules)
					require.Empty(t, checkPromQL(r.Expr, exported), "%s: alert %s: %s", rules, r.Alert, r.Expr)
					for _, m := range jobRe.FindAllStringSubmatch(r.Expr, -1) {
						require.True(t, slices.ContainsFunc(pc.ScrapeConfigs, func(sc promScrapeConfig) bool { return sc.JobName == m[1] }), "%s: alert %s: no scrape job %q in %s", rules, r.Alert, m[1], host)
					}
				}
			}
		}
	})
}

// promConfig is the part of a Prometheus configuration these tests read.
type promConfig struct {
	RuleFiles     []string           `yaml:"rule_files"`
	ScrapeConfigs []promScrapeConfig `yaml:"scrape_configs"`
}

type promScrapeConfig struct {
	JobName      string `yaml:"job_name"`
	DNSSDConfigs []struct {
		Names []string `yaml:"names"`
		Type  string   `yaml:"type"`
		Port  int      `yaml:"port"`
	} `yaml:"dns_sd_configs"`
}

var jobRe = regexp.MustCompile(`job="([^"]+)"`)

func TestComposeReferencesOnlyWhatExists(t *testing.T) {
	cf := loadCompose(t)
	for name, svc := range cf.Services {
		require.True(t, svc.Image != "" || svc.Build != nil, "service %s: neither image nor build", name)
		if svc.Build != nil {
			df := cmp.Or(svc.Build.Dockerfile, "Dockerfile")
			_, err := os.Stat(filepath.Join(repoRoot, svc.Build.Context, df))
			require.NoError(t, err, "service %s: build", name)
		}
		for _, v := range svc.Volumes {
			source, _, bind := bindMount(v)
			if bind {
				_, err := os.Stat(filepath.Join(repoRoot, source))
				require.NoError(t, err, "service %s: volume %q", name, v)
			} else {
				require.Contains(t, cf.Volumes, source, "service %s: volume %q is not declared under volumes:", name, v)
			}
		}
		for dep, d := range svc.DependsOn {
			target, ok := cf.Services[dep]
			require.True(t, ok, "service %s: depends_on %s: no such service", name, dep)
			require.Contains(t, []string{"service_started", "service_healthy", "service_completed_successfully"}, d.Condition, "service %s: depends_on %s", name, dep)
			if d.Condition == "service_healthy" {
				require.NotNil(t, target.Healthcheck, "service %s: depends_on %s being healthy, which has no healthcheck", name, dep)
			}
		}
	}
}

// dockerfileArgs are the ARG names the Dockerfile declares.
func dockerfileArgs(t *testing.T) map[string]bool {
	t.Helper()
	args := map[string]bool{}
	for _, in := range readDockerfile(t) {
		if in.cmd == "ARG" {
			for _, f := range strings.Fields(in.args) {
				name, _, _ := strings.Cut(f, "=")
				args[name] = true
			}
		}
	}
	return args
}

func TestComposeServiceCheckRefusesWhatTheBinaryRefuses(t *testing.T) {
	for _, tc := range []struct {
		svc  composeService
		want string
	}{
		{composeService{Command: []string{"run", "--no-such-flag"}}, "unknown flag: --no-such-flag"},
		{composeService{Command: []string{"runn"}}, "names no kustomer-sync command"},
		{composeService{Command: []string{"dlq"}}, "names no kustomer-sync command"},
		{composeService{Command: []string{"run", "extra"}}, "unknown command \"extra\""},
		{composeService{Command: []string{"run"}, Environment: map[string]string{"KSYNC_STREAM_REPLICA": "3"}}, "does not read the environment variable KSYNC_STREAM_REPLICA"},
		{composeService{Command: []string{"run"}, Environment: map[string]string{"KSYNC_STREAM_REPLICAS": "three"}}, `KSYNC_STREAM_REPLICAS="three" (--stream-replicas): want a whole number`},
		{composeService{Command: []string{"publish", "a", "b"}}, "accepts at most 1 arg"},
	} {
		_, err := parseService(t, "x", tc.svc)
		require.ErrorContains(t, err, tc.want, "%q %v", tc.svc.Command, tc.svc.Environment)
	}
	p, err := parseService(t, "x", composeService{Command: []string{"run"}, Environment: map[string]string{"KSYNC_STREAM_REPLICAS": "3"}})
	require.NoError(t, err)
	require.Equal(t, "3", p.flag(t, "stream-replicas"))
}

// dockerfileBinaries are the paths the final stage copies from the build
// stage: what a container of the image can run.
func dockerfileBinaries(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, in := range readDockerfile(t) {
		if f := strings.Fields(in.args); in.cmd == "COPY" && len(f) > 1 && strings.HasPrefix(f[0], "--from=") {
			out = append(out, f[len(f)-1])
		}
	}
	return out
}
