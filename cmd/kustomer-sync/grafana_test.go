package main

// deploy/grafana/kustomer-sync.json is checked against the metrics a worker
// exports, docker-compose.yml's Grafana against the Prometheus service and
// the dashboard, and README.md's panel list against the dashboard. No
// Grafana runs here: how the panels look is not checked.

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
	"github.com/stretchr/testify/require"
)

const dashboardFile = "deploy/grafana/kustomer-sync.json"

type grafanaDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaPanel struct {
	ID          int                `json:"id"`
	Type        string             `json:"type"`
	Title       string             `json:"title"`
	Description string             `json:"description"`
	Datasource  *grafanaDatasource `json:"datasource"`
	GridPos     struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string             `json:"refId"`
		Datasource *grafanaDatasource `json:"datasource"`
		Expr       string             `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's
}

type grafanaDashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name       string             `json:"name"`
			Type       string             `json:"type"`
			Query      any                `json:"query"`
			Datasource *grafanaDatasource `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

func loadDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, dashboardFile))
	require.NoError(t, err)
	var d grafanaDashboard
	require.NoError(t, json.Unmarshal(data, &d), dashboardFile)
	return d
}

// graphs are the dashboard's panels that draw something, in order, rows'
// panels included.
func (d grafanaDashboard) graphs() []grafanaPanel {
	var out []grafanaPanel
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	return out
}

func TestGrafanaDashboardQueriesNameWhatTheWorkerExports(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	exported := exportedMetrics(t)
	require.NotEmpty(t, d.UID, "%s: no uid: links to it would change on each import", dashboardFile)

	// The data source is a variable, so the dashboard imports anywhere.
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" {
			q, ok := v.Query.(map[string]any)
			require.True(t, ok, "%s: variable %s: want a query object", dashboardFile, v.Name)
			expr, _ := q["query"].(string)
			require.Empty(t, checkPromQL(expr, exported), "%s: variable %s: %s", dashboardFile, v.Name, expr)
			require.Equal(t, &grafanaDatasource{Type: "prometheus", UID: "${datasource}"}, v.Datasource, "%s: variable %s", dashboardFile, v.Name)
		}
	}
	require.Equal(t, "datasource", vars["datasource"], "%s: no datasource variable", dashboardFile)

	ids := map[int]bool{}
	titles := map[string]bool{}
	used := map[string]bool{}
	for _, p := range d.graphs() {
		require.NotEmpty(t, p.Title, "%s: panel %d has no title", dashboardFile, p.ID)
		require.False(t, titles[p.Title], "%s: two panels titled %q", dashboardFile, p.Title)
		titles[p.Title] = true
		require.False(t, ids[p.ID], "%s: two panels of id %d", dashboardFile, p.ID)
		ids[p.ID] = true
		require.NotEmpty(t, p.Description, "%s: panel %q: say what it shows", dashboardFile, p.Title)
		require.True(t, p.GridPos.W > 0 && p.GridPos.H > 0 && p.GridPos.X+p.GridPos.W <= 24, "%s: panel %q: gridPos %+v", dashboardFile, p.Title, p.GridPos)
		require.NotEmpty(t, p.Targets, "%s: panel %q: no query", dashboardFile, p.Title)
		for _, tg := range p.Targets {
			require.NotEmpty(t, tg.Expr, "%s: panel %q: query %s is empty", dashboardFile, p.Title, tg.RefID)
			require.Empty(t, checkPromQL(tg.Expr, exported), "%s: panel %q: %s", dashboardFile, p.Title, tg.Expr)
			for _, ds := range []*grafanaDatasource{p.Datasource, tg.Datasource} {
				require.Equal(t, &grafanaDatasource{Type: "prometheus", UID: "${datasource}"}, ds, "%s: panel %q: data source", dashboardFile, p.Title)
			}
			for _, v := range dashboardVarRe.FindAllStringSubmatch(tg.Expr, -1) {
				require.Contains(t, vars, v[1], "%s: panel %q: no variable $%s", dashboardFile, p.Title, v[1])
			}
			for _, m := range promNameRe.FindAllString(tg.Expr, -1) {
				used[m] = true
			}
		}
	}

	// What an operator asks the dashboard, each answered by some panel.
	for what, metrics := range map[string][]string{
		"throughput by outcome":       {"kustomer_sync_items_total"},
		"backlog per workflow":        {"kustomer_sync_consumer_pending"},
		"rate budget used vs limit":   {"kustomer_sync_kustomer_requests_total", "kustomer_sync_rate_per_minute"},
		"429s":                        {"kustomer_sync_kustomer_rate_limited_total"},
		"retries":                     {"kustomer_sync_retries_total"},
		"dead letters by class":       {"kustomer_sync_dead_letters_total"},
		"pause state":                 {"kustomer_sync_workflow_paused"},
		"Kustomer latency":            {"kustomer_sync_kustomer_request_duration_seconds_bucket"},
		"bulk customers per unit":     {"kustomer_sync_bulk_batch_items_sum", "kustomer_sync_bulk_requests_total"},
		"replicas sharing the budget": {"kustomer_sync_replicas"},
	} {
		for _, m := range metrics {
			require.True(t, used[m], "%s: %s: no panel queries %s", dashboardFile, what, m)
		}
	}
}

// dashboardVarRe finds the variables a query uses: $name (Grafana's own
// $__name are not the dashboard's).
var dashboardVarRe = regexp.MustCompile(`\$(?:\{)?([a-zA-Z][a-zA-Z0-9_]*)`)

func TestComposeProvisionsGrafanaWithPrometheusAndTheDashboard(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	names := servicesWhere(cf, func(s composeService) bool { return strings.HasPrefix(s.Image, "grafana/grafana:") })
	require.Len(t, names, 1, "docker-compose.yml: want one Grafana service")
	name := names[0]
	g := cf.Services[name]
	proms := servicesWhere(cf, func(s composeService) bool { return strings.HasPrefix(s.Image, "prom/prometheus:") })
	require.Len(t, proms, 1)
	prom := proms[0]
	require.Equal(t, "service_healthy", g.DependsOn[prom].Condition, "service %s: depends_on %s", name, prom)
	require.Equal(t, "unless-stopped", g.Restart, "service %s: restart", name)
	promPort := healthURL(t, prom, cf.Services[prom].Healthcheck).Port()

	// mounted are the files bind-mounted into the container under dir.
	mounted := func(dir string) []string {
		var out []string
		for _, v := range g.Volumes {
			if _, target, bind := bindMount(v); bind && path.Dir(target) == dir {
				out = append(out, requireMountedFile(t, name, g, "provisioning file", target))
			}
		}
		require.NotEmpty(t, out, "service %s: nothing mounted in %s", name, dir)
		return out
	}

	// The data source is the Prometheus service, as the dashboard names it.
	var found bool
	for _, f := range mounted("/etc/grafana/provisioning/datasources") {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		var ds struct {
			Datasources []struct {
				Type      string `yaml:"type"`
				URL       string `yaml:"url"`
				IsDefault bool   `yaml:"isDefault"`
			} `yaml:"datasources"`
		}
		require.NoError(t, yaml.Unmarshal(data, &ds), f)
		for _, d := range ds.Datasources {
			if d.Type != "prometheus" {
				continue
			}
			u, err := url.Parse(d.URL)
			require.NoError(t, err, f)
			require.Equal(t, prom, u.Hostname(), "%s: the Prometheus data source is not the %s service", f, prom)
			require.Equal(t, promPort, u.Port(), "%s: not the port %s listens on", f, prom)
			require.True(t, d.IsDefault, "%s: the dashboard's datasource variable picks the default one", f)
			found = true
		}
	}
	require.True(t, found, "service %s: no Prometheus data source provisioned", name)

	// The dashboard provider reads the directory the dashboard is mounted in.
	want, err := filepath.Abs(filepath.Join(repoRoot, dashboardFile))
	require.NoError(t, err)
	found = false
	for _, f := range mounted("/etc/grafana/provisioning/dashboards") {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		var dp struct {
			Providers []struct {
				Type    string `yaml:"type"`
				Options struct {
					Path string `yaml:"path"`
				} `yaml:"options"`
			} `yaml:"providers"`
		}
		require.NoError(t, yaml.Unmarshal(data, &dp), f)
		for _, p := range dp.Providers {
			require.Equal(t, "file", p.Type, f)
			host := requireMountedFile(t, name, g, "dashboard", path.Join(p.Options.Path, path.Base(dashboardFile)))
			got, err := filepath.Abs(host)
			require.NoError(t, err)
			require.Equal(t, want, got, "%s: the provider's directory holds another file than %s", f, dashboardFile)
			found = true
		}
	}
	require.True(t, found, "service %s: no dashboard provider", name)
	requirePort(t, name, healthURL(t, name, g.Healthcheck), 3000)
}

// dashboardPanelsMarkdown is README.md's rendering of the dashboard: each
// panel's title, description and queries.
func dashboardPanelsMarkdown(d grafanaDashboard) string {
	var b strings.Builder
	b.WriteString("| panel | shows | queries |\n|---|---|---|\n")
	for _, p := range d.graphs() {
		var qs []string
		for _, tg := range p.Targets {
			qs = append(qs, "`"+strings.ReplaceAll(tg.Expr, "|", `\|`)+"`")
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", p.Title, strings.ReplaceAll(p.Description, "|", `\|`), strings.Join(qs, "<br>"))
	}
	return b.String()
}

const (
	readmePanelsStart = "<!-- dashboard panels: rendered from deploy/grafana/kustomer-sync.json; TestReadmeListsTheDashboardPanels checks it -->\n"
	readmePanelsEnd   = "<!-- end of dashboard panels -->"
)

func TestReadmeListsTheDashboardPanels(t *testing.T) {
	t.Parallel()
	want := dashboardPanelsMarkdown(loadDashboard(t))
	text := readme(t)
	_, rest, ok := strings.Cut(text, readmePanelsStart)
	require.True(t, ok, "README.md: no %q", strings.TrimSpace(readmePanelsStart))
	got, _, ok := strings.Cut(rest, readmePanelsEnd)
	require.True(t, ok, "README.md: no %q", readmePanelsEnd)
	require.Equal(t, want, got, "README.md's dashboard panels are not %s's; they should read:\n%s", dashboardFile, want)
	require.True(t, slices.Contains([]string{"### Metrics to alert on"}, sectionOf(text, readmePanelsStart)), "README.md: the dashboard panels belong in \"Metrics to alert on\"")
}

// sectionOf is the heading of the README section that holds s.
func sectionOf(text, s string) string {
	before, _, _ := strings.Cut(text, s)
	i := strings.LastIndex(before, "\n#")
	if i < 0 {
		return ""
	}
	heading, _, _ := strings.Cut(before[i+1:], "\n")
	return heading
}
