package main

// No cluster runs where the tests run, so these tests render
// deploy/kubernetes's overlays with kustomize's own library (what `kubectl
// kustomize` runs) and check the manifests against what they name: the
// container's command line and environment against the real command tree,
// its user and entrypoint against the Dockerfile, its probes and the
// ServiceMonitor's path against a running worker's admin server, the grace
// period against --drain-timeout, and the KEDA triggers' consumers against
// the consumers a running worker creates for the workflows' ConfigMap.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

// The parts of the Kubernetes objects these tests read.
type k8sMeta struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels"`
}

type k8sObject struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Metadata   k8sMeta `yaml:"metadata"`
}

type k8sSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type k8sDeployment struct {
	Metadata k8sMeta `yaml:"metadata"`
	Spec     struct {
		Replicas *int        `yaml:"replicas"`
		Selector k8sSelector `yaml:"selector"`
		Strategy struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable any `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata k8sMeta    `yaml:"metadata"`
			Spec     k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sPodSpec struct {
	TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot   *bool `yaml:"runAsNonRoot"`
		RunAsUser      *int  `yaml:"runAsUser"`
		RunAsGroup     *int  `yaml:"runAsGroup"`
		FSGroup        *int  `yaml:"fsGroup"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	Containers     []k8sContainer `yaml:"containers"`
	InitContainers []k8sContainer `yaml:"initContainers"`
	Volumes        []k8sVolume    `yaml:"volumes"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []k8sEnv `yaml:"env"`
	EnvFrom []any    `yaml:"envFrom"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Privileged               *bool `yaml:"privileged"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
			Add  []string `yaml:"add"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type k8sEnv struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
		ConfigMapKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"configMapKeyRef"`
		ResourceFieldRef *struct {
			Resource string `yaml:"resource"`
		} `yaml:"resourceFieldRef"`
	} `yaml:"valueFrom"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	Exec             any `yaml:"exec"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
	TimeoutSeconds   int `yaml:"timeoutSeconds"`
}

type k8sKeyPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

type k8sVolume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name  string       `yaml:"name"`
		Items []k8sKeyPath `yaml:"items"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName string       `yaml:"secretName"`
		Items      []k8sKeyPath `yaml:"items"`
	} `yaml:"secret"`
}

type k8sConfigMap struct {
	Metadata k8sMeta           `yaml:"metadata"`
	Data     map[string]string `yaml:"data"`
}

type k8sPDB struct {
	Metadata k8sMeta `yaml:"metadata"`
	Spec     struct {
		MaxUnavailable any         `yaml:"maxUnavailable"`
		MinAvailable   any         `yaml:"minAvailable"`
		Selector       k8sSelector `yaml:"selector"`
	} `yaml:"spec"`
}

type k8sService struct {
	Metadata k8sMeta `yaml:"metadata"`
	Spec     struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sServiceMonitor struct {
	Metadata k8sMeta `yaml:"metadata"`
	Spec     struct {
		JobLabel  string      `yaml:"jobLabel"`
		Selector  k8sSelector `yaml:"selector"`
		Endpoints []struct {
			Port string `yaml:"port"`
			Path string `yaml:"path"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

type k8sScaledObject struct {
	Metadata k8sMeta `yaml:"metadata"`
	Spec     struct {
		ScaleTargetRef struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Name       string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicaCount *int `yaml:"minReplicaCount"`
		MaxReplicaCount *int `yaml:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `yaml:"type"`
			Metadata map[string]string `yaml:"metadata"`
		} `yaml:"triggers"`
	} `yaml:"spec"`
}

// k8sRender is an overlay as `kubectl kustomize` renders it.
type k8sRender struct {
	overlay        string
	deployments    []k8sDeployment
	configMaps     []k8sConfigMap
	pdbs           []k8sPDB
	services       []k8sService
	serviceMonitor []k8sServiceMonitor
	scaledObjects  []k8sScaledObject
	kinds          []string
}

const kubernetesDir = "deploy/kubernetes"

// k8sOverlays are the overlays under deploy/kubernetes/overlays.
func k8sOverlays(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(repoRoot, kubernetesDir, "overlays"))
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	require.NotEmpty(t, out, "%s/overlays: no overlay", kubernetesDir)
	return out
}

// renderKustomization runs kustomize on dir as `kubectl kustomize dir` does.
func renderKustomization(t *testing.T, dir string) k8sRender {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), dir)
	require.NoError(t, err, "kustomize build %s", dir)
	r := k8sRender{overlay: dir}
	for _, res := range resources.Resources() {
		data, err := res.AsYAML()
		require.NoError(t, err)
		var obj k8sObject
		require.NoError(t, yaml.Unmarshal(data, &obj))
		r.kinds = append(r.kinds, obj.Kind)
		what := fmt.Sprintf("%s: %s %s", dir, obj.Kind, obj.Metadata.Name)
		switch obj.Kind {
		case "Deployment":
			r.deployments = append(r.deployments, decodeAs[k8sDeployment](t, data, what))
		case "ConfigMap":
			r.configMaps = append(r.configMaps, decodeAs[k8sConfigMap](t, data, what))
		case "PodDisruptionBudget":
			r.pdbs = append(r.pdbs, decodeAs[k8sPDB](t, data, what))
		case "Service":
			r.services = append(r.services, decodeAs[k8sService](t, data, what))
		case "ServiceMonitor":
			r.serviceMonitor = append(r.serviceMonitor, decodeAs[k8sServiceMonitor](t, data, what))
		case "ScaledObject":
			r.scaledObjects = append(r.scaledObjects, decodeAs[k8sScaledObject](t, data, what))
		}
	}
	return r
}

func decodeAs[T any](t *testing.T, data []byte, what string) T {
	t.Helper()
	var v T
	require.NoError(t, yaml.Unmarshal(data, &v), what)
	return v
}

func renderOverlay(t *testing.T, overlay string) k8sRender {
	t.Helper()
	return renderKustomization(t, filepath.Join(repoRoot, kubernetesDir, "overlays", overlay))
}

// worker is the overlay's one Deployment and its one container.
func (r k8sRender) worker(t *testing.T) (k8sDeployment, k8sContainer) {
	t.Helper()
	require.Len(t, r.deployments, 1, "%s: want one Deployment", r.overlay)
	d := r.deployments[0]
	require.Len(t, d.Spec.Template.Spec.Containers, 1, "%s: Deployment %s: want one container", r.overlay, d.Metadata.Name)
	return d, d.Spec.Template.Spec.Containers[0]
}

func (r k8sRender) configMap(name string) (k8sConfigMap, bool) {
	i := slices.IndexFunc(r.configMaps, func(c k8sConfigMap) bool { return c.Metadata.Name == name })
	if i < 0 {
		return k8sConfigMap{}, false
	}
	return r.configMaps[i], true
}

// k8sPodName stands for the pod's name where the downward API gives it.
const k8sPodName = "kustomer-sync-6f7d9c5b8-x2k4q"

// goRuntimeEnv are variables the Go runtime reads, not kustomer-sync's flags.
var goRuntimeEnv = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC"}

// asService is the container as docker-compose.yml's services are checked:
// its arguments (the image's ENTRYPOINT is the binary) and its environment,
// with what Kubernetes fills in at run time stood in for.
func (c k8sContainer) asService(t *testing.T, overlay string) composeService {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		_, dup := env[e.Name]
		require.False(t, dup, "%s: env %s is set twice", overlay, e.Name)
		if slices.Contains(goRuntimeEnv, e.Name) {
			env[e.Name] = ""
			continue
		}
		switch vf := e.ValueFrom; {
		case vf == nil:
			env[e.Name] = e.Value
		case vf.FieldRef != nil:
			require.Equal(t, "metadata.name", vf.FieldRef.FieldPath, "%s: env %s", overlay, e.Name)
			env[e.Name] = k8sPodName
		case vf.SecretKeyRef != nil:
			env[e.Name] = "secret-" + vf.SecretKeyRef.Name + "-" + vf.SecretKeyRef.Key
		default:
			t.Fatalf("%s: env %s: a valueFrom this test does not know", overlay, e.Name)
		}
	}
	svc := composeService{Command: c.Args, Environment: map[string]string{}}
	for k, v := range env {
		if !slices.Contains(goRuntimeEnv, k) {
			svc.Environment[k] = v
		}
	}
	return svc
}

// mountedItem returns the volume that holds file in c's container and the
// key of the ConfigMap or Secret the file is; it fails unless a read-only
// mount of a ConfigMap or Secret item holds file.
func mountedItem(t *testing.T, overlay string, pod k8sPodSpec, c k8sContainer, what, file string) (k8sVolume, string) {
	t.Helper()
	require.True(t, path.IsAbs(file), "%s: %s %q: want an absolute path", overlay, what, file)
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		require.True(t, m.ReadOnly, "%s: %s %s: volume mount %s is not read-only", overlay, what, file, m.Name)
		require.Empty(t, m.SubPath, "%s: %s %s: a subPath mount is never updated", overlay, what, file)
		i := slices.IndexFunc(pod.Volumes, func(v k8sVolume) bool { return v.Name == m.Name })
		require.GreaterOrEqual(t, i, 0, "%s: volume mount %s: no such volume", overlay, m.Name)
		v := pod.Volumes[i]
		var items []k8sKeyPath
		switch {
		case v.ConfigMap != nil:
			items = v.ConfigMap.Items
		case v.Secret != nil:
			items = v.Secret.Items
		default:
			t.Fatalf("%s: %s %s: volume %s is neither a ConfigMap nor a Secret", overlay, what, file, v.Name)
		}
		require.NotEmpty(t, items, "%s: volume %s: list its items, so the key the file is stays explicit", overlay, v.Name)
		j := slices.IndexFunc(items, func(it k8sKeyPath) bool { return it.Path == rel })
		require.GreaterOrEqual(t, j, 0, "%s: %s %s: volume %s has no item at %s", overlay, what, file, v.Name, rel)
		return v, items[j].Key
	}
	t.Fatalf("%s: %s %s is in no volume mount", overlay, what, file)
	return k8sVolume{}, ""
}

// dockerfileUser is the final stage's USER, as uid and gid.
func dockerfileUser(t *testing.T) (int, int) {
	t.Helper()
	var user string
	stages := dockerStages(readDockerfile(t))
	for _, in := range stages[len(stages)-1] {
		if in.cmd == "USER" {
			user = in.args
		}
	}
	uid, gid, _ := strings.Cut(user, ":")
	u, err := strconv.Atoi(uid)
	require.NoError(t, err, "Dockerfile: USER %s: want numeric, so runAsNonRoot can verify it", user)
	g, err := strconv.Atoi(gid)
	require.NoError(t, err, "Dockerfile: USER %s: want uid:gid, both numeric", user)
	return u, g
}

// dockerfileEntrypoint is the final stage's ENTRYPOINT.
func dockerfileEntrypoint(t *testing.T) []string {
	t.Helper()
	var ep []string
	stages := dockerStages(readDockerfile(t))
	for _, in := range stages[len(stages)-1] {
		if in.cmd == "ENTRYPOINT" {
			require.NoError(t, yaml.Unmarshal([]byte(in.args), &ep))
		}
	}
	require.NotEmpty(t, ep, "Dockerfile: no ENTRYPOINT")
	return ep
}

// subset reports whether every label of sel is in labels with its value.
func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

// portOf resolves a probe's or Service's port, a name or a number, to the
// container's port number.
func portOf(t *testing.T, overlay string, c k8sContainer, port any) int {
	t.Helper()
	switch p := port.(type) {
	case string:
		i := slices.IndexFunc(c.Ports, func(cp struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		}) bool {
			return cp.Name == p
		})
		require.GreaterOrEqual(t, i, 0, "%s: port %q is no port of container %s", overlay, p, c.Name)
		return c.Ports[i].ContainerPort
	case uint64:
		return int(p)
	case int64:
		return int(p)
	case int:
		return p
	}
	t.Fatalf("%s: port %v (%T)", overlay, port, port)
	return 0
}

// adminServed are the paths the admin server serves without a token: what
// a probe or a scraper may ask (admin/server.go; TestKubernetesProbesAndScrapeAreServedAndTheTriggersConsumersExist asks a running worker).
var adminServed = []string{"/healthz", "/readyz", "/metrics"}

func TestKubernetesManifestsRunTheCLIAsItIs(t *testing.T) {
	uid, gid := dockerfileUser(t)
	entrypoint := dockerfileEntrypoint(t)
	for _, overlay := range k8sOverlays(t) {
		t.Run(overlay, func(t *testing.T) {
			r := renderOverlay(t, overlay)
			for _, kind := range r.kinds {
				require.Contains(t, []string{"Deployment", "ConfigMap", "PodDisruptionBudget", "Service", "ServiceMonitor", "ScaledObject"}, kind, "%s: a %s, which this test does not check", overlay, kind)
			}
			d, c := r.worker(t)
			pod := d.Spec.Template.Spec
			podLabels := d.Spec.Template.Metadata.Labels
			require.True(t, subset(d.Spec.Selector.MatchLabels, podLabels), "%s: the Deployment's selector %v does not select its pods %v", overlay, d.Spec.Selector.MatchLabels, podLabels)

			// The image the Dockerfile builds, run as it says.
			repo, tag, _ := strings.Cut(path.Base(c.Image), ":")
			require.Equal(t, "kustomer-sync", repo, "%s: image %s", overlay, c.Image)
			require.NotContains(t, []string{"", "latest"}, tag, "%s: image %s: pin a tag (images: newTag)", overlay, c.Image)
			require.True(t, len(c.Command) == 0 || slices.Equal(c.Command, entrypoint), "%s: command %q is not the image's ENTRYPOINT %q", overlay, c.Command, entrypoint)
			require.Empty(t, pod.InitContainers, "%s", overlay)
			require.Empty(t, c.EnvFrom, "%s: envFrom: this test cannot see which variables it sets", overlay)

			// Non-root as the Dockerfile's user, nothing more than it needs.
			sc := pod.SecurityContext
			require.True(t, sc.RunAsNonRoot != nil && *sc.RunAsNonRoot, "%s: runAsNonRoot", overlay)
			require.Equal(t, &uid, sc.RunAsUser, "%s: runAsUser is not the Dockerfile's USER", overlay)
			require.Equal(t, &gid, sc.RunAsGroup, "%s: runAsGroup is not the Dockerfile's USER", overlay)
			require.Equal(t, &gid, sc.FSGroup, "%s: fsGroup: the mounted Secrets must be readable by the Dockerfile's group", overlay)
			require.Equal(t, "RuntimeDefault", sc.SeccompProfile.Type, "%s: seccompProfile", overlay)
			csc := c.SecurityContext
			require.True(t, csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation, "%s: allowPrivilegeEscalation: false", overlay)
			require.True(t, csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem, "%s: readOnlyRootFilesystem: true", overlay)
			require.False(t, csc.Privileged != nil && *csc.Privileged, "%s: privileged", overlay)
			require.Equal(t, []string{"ALL"}, csc.Capabilities.Drop, "%s: capabilities.drop", overlay)
			require.Empty(t, csc.Capabilities.Add, "%s: capabilities.add", overlay)
			for _, res := range []string{"cpu", "memory"} {
				require.NotEmpty(t, c.Resources.Requests[res], "%s: resources.requests.%s", overlay, res)
			}
			require.NotEmpty(t, c.Resources.Limits["memory"], "%s: resources.limits.memory", overlay)

			// The command line and the environment, through the real command tree.
			p := mustParseService(t, overlay, c.asService(t, overlay))
			require.Equal(t, "run", p.cmd.Name(), "%s: args %q", overlay, c.Args)
			env := map[string]k8sEnv{}
			for _, e := range c.Env {
				env[e.Name] = e
			}
			for _, name := range []string{"GOMEMLIMIT", "GOMAXPROCS"} {
				if e, ok := env[name]; ok && e.ValueFrom != nil {
					require.NotNil(t, e.ValueFrom.ResourceFieldRef, "%s: env %s", overlay, name)
					require.NotEmpty(t, c.Resources.Limits[strings.TrimPrefix(e.ValueFrom.ResourceFieldRef.Resource, "limits.")], "%s: env %s: from a limit that is not set", overlay, name)
				}
			}
			// A unique replica id per pod: its name.
			rid, ok := env["KSYNC_REPLICA_ID"]
			require.True(t, ok && rid.ValueFrom != nil && rid.ValueFrom.FieldRef != nil && rid.ValueFrom.FieldRef.FieldPath == "metadata.name", "%s: KSYNC_REPLICA_ID must come from the pod's name (fieldRef metadata.name)", overlay)
			require.Equal(t, k8sPodName, p.flag(t, "replica-id"), "%s", overlay)
			// Secrets come from Secrets, never from the manifest.
			for _, name := range []string{"KUSTOMER_API_KEY", "KSYNC_ADMIN_TOKEN", "NATS_PASSWORD"} {
				if e, ok := env[name]; ok {
					require.True(t, e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil, "%s: env %s: from a Secret (secretKeyRef), not a value in the manifest", overlay, name)
				}
			}
			_, keyInEnv := env["KUSTOMER_API_KEY"]
			require.False(t, keyInEnv, "%s: pass the Kustomer key as a file (KUSTOMER_API_KEY_FILE) from a Secret", overlay)
			require.Equal(t, "false", p.flag(t, "sandbox"), "%s", overlay)
			require.NotEmpty(t, p.flag(t, "nats-url"), "%s: no NATS_URL: it would start an embedded server", overlay)
			require.Equal(t, "3", p.flag(t, "stream-replicas"), "%s: streams should survive the loss of a NATS node", overlay)

			// The files the flags name are the Secrets' and the ConfigMap's items.
			keyVol, _ := mountedItem(t, overlay, pod, c, "--kustomer-api-key-file", p.flag(t, "kustomer-api-key-file"))
			require.NotNil(t, keyVol.Secret, "%s: --kustomer-api-key-file: not from a Secret", overlay)
			credsVol, _ := mountedItem(t, overlay, pod, c, "--nats-creds", p.flag(t, "nats-creds"))
			require.NotNil(t, credsVol.Secret, "%s: --nats-creds: not from a Secret", overlay)
			for _, fl := range []string{"nats-nkey", "nats-ca", "nats-cert", "nats-key", "context"} {
				if f := p.flag(t, fl); f != "" {
					mountedItem(t, overlay, pod, c, "--"+fl, f)
				}
			}
			cfgVol, cfgKey := mountedItem(t, overlay, pod, c, "--config", p.flag(t, "config"))
			require.NotNil(t, cfgVol.ConfigMap, "%s: --config: not from a ConfigMap", overlay)
			cm, ok := r.configMap(cfgVol.ConfigMap.Name)
			require.True(t, ok, "%s: volume %s: ConfigMap %s is not in the overlay", overlay, cfgVol.Name, cfgVol.ConfigMap.Name)
			require.Contains(t, cm.Data, cfgKey, "%s: ConfigMap %s", overlay, cm.Metadata.Name)
			cfg := loadWorkflows(t, cm.Data[cfgKey])
			// A generated name (a hash of the content): a change of workflows
			// is a new ConfigMap, so applying it rolls the replicas out.
			require.Regexp(t, `^kustomer-sync-workflows-[a-z0-9]{10}$`, cm.Metadata.Name, "%s: the workflows ConfigMap should come from a configMapGenerator, so a change rolls out", overlay)

			// SIGTERM drains within --drain-timeout; SIGKILL must not come first.
			drain, err := time.ParseDuration(p.flag(t, "drain-timeout"))
			require.NoError(t, err)
			grace := 30 * time.Second // Kubernetes' default
			if pod.TerminationGracePeriodSeconds != nil {
				grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
			}
			require.Greater(t, grace, drain, "%s: terminationGracePeriodSeconds must exceed the drain timeout", overlay)
			// A rollout (a new image, or new workflows) starts a new replica
			// before it drains an old one.
			require.Equal(t, "RollingUpdate", d.Spec.Strategy.Type, "%s: strategy", overlay)
			require.Equal(t, "0", fmt.Sprint(d.Spec.Strategy.RollingUpdate.MaxUnavailable), "%s: strategy: maxUnavailable", overlay)

			// The probes ask the admin server, beyond loopback, on its port.
			host, port, err := net.SplitHostPort(p.flag(t, "admin-addr"))
			require.NoError(t, err, "%s: --admin-addr", overlay)
			require.Contains(t, []string{"", "0.0.0.0", "::"}, host, "%s: --admin-addr %s: the kubelet and Prometheus cannot reach loopback", overlay, p.flag(t, "admin-addr"))
			adminPort, err := strconv.Atoi(port)
			require.NoError(t, err)
			probes := map[string]*k8sProbe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe}
			for name, pr := range probes {
				require.NotNil(t, pr, "%s: no %s", overlay, name)
				require.NotNil(t, pr.HTTPGet, "%s: %s: want httpGet (the image has no shell)", overlay, name)
				require.Contains(t, adminServed, pr.HTTPGet.Path, "%s: %s: the admin server does not serve %s", overlay, name, pr.HTTPGet.Path)
				require.Equal(t, adminPort, portOf(t, overlay, c, pr.HTTPGet.Port), "%s: %s: not the admin server's port (--admin-addr %s)", overlay, name, p.flag(t, "admin-addr"))
			}
			require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path, "%s: liveness asks whether the process serves", overlay)
			require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path, "%s: readiness asks whether it can work", overlay)
			// The admin server starts once start-up is done, which may take
			// --startup-timeout: liveness must not count before.
			startup, err := time.ParseDuration(p.flag(t, "startup-timeout"))
			require.NoError(t, err)
			window := time.Duration(c.StartupProbe.PeriodSeconds*c.StartupProbe.FailureThreshold) * time.Second
			require.Greater(t, window, startup, "%s: startupProbe: periodSeconds x failureThreshold must exceed --startup-timeout", overlay)

			// The PodDisruptionBudget covers the pods, one at a time.
			require.Len(t, r.pdbs, 1, "%s: want one PodDisruptionBudget", overlay)
			pdb := r.pdbs[0]
			require.True(t, subset(pdb.Spec.Selector.MatchLabels, podLabels), "%s: the PodDisruptionBudget selects %v, not the pods %v", overlay, pdb.Spec.Selector.MatchLabels, podLabels)
			require.Equal(t, "1", fmt.Sprint(pdb.Spec.MaxUnavailable), "%s: PodDisruptionBudget maxUnavailable", overlay)

			// The Service reaches the admin port.
			require.Len(t, r.services, 1, "%s: want one Service", overlay)
			svc := r.services[0]
			require.True(t, subset(svc.Spec.Selector, podLabels), "%s: the Service selects %v, not the pods %v", overlay, svc.Spec.Selector, podLabels)
			require.Len(t, svc.Spec.Ports, 1, "%s: Service ports", overlay)
			require.Equal(t, adminPort, portOf(t, overlay, c, svc.Spec.Ports[0].TargetPort), "%s: the Service's targetPort is not the admin server's", overlay)

			// The ServiceMonitor scrapes /metrics through it, under the job
			// deploy/alerts.yml names.
			for _, sm := range r.serviceMonitor {
				require.True(t, subset(sm.Spec.Selector.MatchLabels, svc.Metadata.Labels), "%s: ServiceMonitor selects %v, not the Service %v", overlay, sm.Spec.Selector.MatchLabels, svc.Metadata.Labels)
				require.Len(t, sm.Spec.Endpoints, 1, "%s: ServiceMonitor endpoints", overlay)
				require.Equal(t, svc.Spec.Ports[0].Name, sm.Spec.Endpoints[0].Port, "%s: ServiceMonitor port is not the Service's", overlay)
				require.Equal(t, "/metrics", sm.Spec.Endpoints[0].Path, "%s: ServiceMonitor path", overlay)
				job := svc.Metadata.Name
				if sm.Spec.JobLabel != "" {
					job = svc.Metadata.Labels[sm.Spec.JobLabel]
				}
				require.Equal(t, alertsJob(t), job, "%s: the ServiceMonitor's job is not the one deploy/alerts.yml counts", overlay)
			}

			// Autoscaling: KEDA on each workflow's consumer, between failover and the ceiling.
			if len(r.scaledObjects) == 0 {
				require.NotNil(t, d.Spec.Replicas, "%s: no ScaledObject and no replicas", overlay)
				require.GreaterOrEqual(t, *d.Spec.Replicas, 2, "%s: want 2 replicas or more, for failover", overlay)
				return
			}
			require.Len(t, r.scaledObjects, 1, "%s", overlay)
			so := r.scaledObjects[0]
			require.Nil(t, d.Spec.Replicas, "%s: the ScaledObject owns the replica count: the Deployment must not set it, or each apply resets it", overlay)
			require.Equal(t, d.Metadata.Name, so.Spec.ScaleTargetRef.Name, "%s: ScaledObject scaleTargetRef", overlay)
			require.Contains(t, []string{"", "Deployment"}, so.Spec.ScaleTargetRef.Kind, "%s", overlay)
			require.NotNil(t, so.Spec.MinReplicaCount, "%s: minReplicaCount (KEDA's default 0 stops every replica)", overlay)
			require.GreaterOrEqual(t, *so.Spec.MinReplicaCount, 2, "%s: minReplicaCount: want 2 or more, for failover", overlay)
			require.NotNil(t, so.Spec.MaxReplicaCount, "%s: maxReplicaCount (KEDA's default is 100)", overlay)
			require.LessOrEqual(t, *so.Spec.MaxReplicaCount, 5, "%s: maxReplicaCount: past a few replicas the budget, not the replicas, sets the pace", overlay)
			require.Greater(t, *so.Spec.MaxReplicaCount, *so.Spec.MinReplicaCount, "%s", overlay)
			var consumers []string
			for i, tr := range so.Spec.Triggers {
				require.Equal(t, "nats-jetstream", tr.Type, "%s: trigger %d", overlay, i)
				for _, k := range []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"} {
					require.NotEmpty(t, tr.Metadata[k], "%s: trigger %d: no %s", overlay, i, k)
				}
				for k := range tr.Metadata {
					require.Contains(t, []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"}, k, "%s: trigger %d: the nats-jetstream scaler has no %s", overlay, i, k)
				}
				require.Equal(t, p.flag(t, "stream"), tr.Metadata["stream"], "%s: trigger %d: not the stream the worker consumes (--stream)", overlay, i)
				lag, err := strconv.Atoi(tr.Metadata["lagThreshold"])
				require.NoError(t, err, "%s: trigger %d: lagThreshold", overlay, i)
				require.Positive(t, lag, "%s: trigger %d: lagThreshold", overlay, i)
				consumers = append(consumers, tr.Metadata["consumer"])
			}
			var want []string
			for _, wf := range cfg.Workflows {
				want = append(want, leads.ConsumerPrefixDefault+wf.Name)
			}
			require.ElementsMatch(t, want, consumers, "%s: want one trigger per workflow of %s, on its consumer", overlay, cm.Metadata.Name)
		})
	}
}

// loadWorkflows loads a workflows file's text as `run --config` does.
func loadWorkflows(t *testing.T, text string) *mapping.Config {
	t.Helper()
	f := filepath.Join(t.TempDir(), "workflows.yaml")
	require.NoError(t, os.WriteFile(f, []byte(text), 0o600))
	cfg, err := mapping.Load(f)
	require.NoError(t, err)
	return cfg
}

// alertsJob is the scrape job deploy/alerts.yml counts replicas of.
func alertsJob(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "alerts.yml"))
	require.NoError(t, err)
	m := jobRe.FindSubmatch(data)
	require.NotNil(t, m, "deploy/alerts.yml names no job")
	return string(m[1])
}

// TestKubernetesProbesAndScrapeAreServedAndTheTriggersConsumersExist runs
// the production overlay's container as the cluster would, but on this
// machine: its arguments and environment, with NATS (one server, so streams
// of one replica), Kustomer (the sandbox), the mounted files and the admin
// address replaced by local ones. The probes'
// and the ServiceMonitor's paths must answer 200, and every KEDA trigger's
// stream and consumer must be ones the worker created.
func TestKubernetesProbesAndScrapeAreServedAndTheTriggersConsumersExist(t *testing.T) {
	r := renderOverlay(t, "production")
	_, c := r.worker(t)
	require.NotEmpty(t, r.scaledObjects, "production: no ScaledObject")
	require.NotEmpty(t, r.serviceMonitor, "production: no ServiceMonitor")

	srv := natstest.Start(t)
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: -1, APIKey: "sk-k8s"})
	addr := adminAddr(t)
	svc := c.asService(t, "production")
	cm := r.configMaps[slices.IndexFunc(r.configMaps, func(c k8sConfigMap) bool { return strings.HasPrefix(c.Metadata.Name, "kustomer-sync-workflows-") })]
	local := map[string]string{
		"NATS_URL":              srv.ClientURL(),
		"NATS_CREDS":            "", // the test server asks for no credentials
		"KUSTOMER_BASE_URL":     sb.URL,
		"KUSTOMER_API_KEY_FILE": writeKey(t, "sk-k8s"),
		"KSYNC_CONFIG":          filepath.Join(t.TempDir(), "workflows.yaml"),
		"KSYNC_ADMIN_ADDR":      addr,
		// One test server holds no R3 stream (the compose test places one
		// on a cluster).
		"KSYNC_STREAM_REPLICAS": "1",
	}
	require.NoError(t, os.WriteFile(local["KSYNC_CONFIG"], []byte(cm.Data["workflows.yaml"]), 0o600))
	for k, v := range svc.Environment {
		if l, ok := local[k]; ok {
			v = l
		}
		t.Setenv(k, v)
	}
	t.Setenv("KUSTOMER_BASE_URL", sb.URL)
	require.Equal(t, "run", svc.Command[0])
	run := startRun(t, svc.Command[1:]...)

	base := "http://" + addr
	var paths []string
	for _, pr := range []*k8sProbe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		paths = append(paths, pr.HTTPGet.Path)
	}
	for _, sm := range r.serviceMonitor {
		for _, ep := range sm.Spec.Endpoints {
			paths = append(paths, ep.Path)
		}
	}
	for _, p := range paths {
		var code int
		var body string
		if !assert.Eventually(t, func() bool {
			code, body = get(t, base+p)
			return code == http.StatusOK
		}, 30*time.Second, 50*time.Millisecond) {
			t.Fatalf("GET %s: %d %s\n%s", p, code, body, run.stderr.String())
		}
	}
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, so := range r.scaledObjects {
		for _, tr := range so.Spec.Triggers {
			_, err := js.Consumer(ctx, tr.Metadata["stream"], tr.Metadata["consumer"])
			require.NoError(t, err, "trigger on stream %s, consumer %s: the worker made no such consumer", tr.Metadata["stream"], tr.Metadata["consumer"])
		}
	}
	run.stop()
}
