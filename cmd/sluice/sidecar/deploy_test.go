package sidecar

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// Every YAML file under deploy/ parses, and every sluice.yaml a manifest
// ships is accepted by the strict config decoder.
func TestDeployManifests(t *testing.T) {
	t.Setenv("POD_NAME", "sluice-0")
	t.Setenv("NATS_ADMIN_PASSWORD", "x")
	t.Setenv("NATS_ANALYTICS_PASSWORD", "y")
	t.Setenv("NATS_OPERATOR_PASSWORD", "z")
	t.Setenv("NATS_ROUTE_PASSWORD", "r")
	files, err := filepath.Glob("../../../deploy/*/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests found: %v", err)
	}
	configs := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for doc := 1; ; doc++ {
			var m struct {
				Kind string            `yaml:"kind"`
				Data map[string]string `yaml:"data"`
			}
			err := dec.Decode(&m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s document %d: %v", f, doc, err)
			}
			if m.Kind != "ConfigMap" || m.Data["sluice.yaml"] == "" {
				continue
			}
			configs++
			cfg, err := ParseConfig(f, []byte(m.Data["sluice.yaml"]))
			if err != nil {
				t.Errorf("%s: the shipped sluice.yaml is rejected: %v", f, err)
				continue
			}
			// Safe as shipped: no database superuser, logins and TLS on a
			// client port other hosts reach.
			if strings.Contains(cfg.Source.DSN, "postgres@") || strings.Contains(cfg.Source.DSN, "root@") {
				t.Errorf("%s: sluice logs in as a database superuser: %s", f, cfg.Source.DSN)
			}
			if !loopback(cfg.NATS.Listen) && (len(cfg.NATS.Users) == 0 || cfg.NATS.TLS == nil) {
				t.Errorf("%s: client port %s is open to other hosts without logins and TLS", f, cfg.NATS.Listen)
			}
		}
	}
	if configs == 0 {
		t.Error("no manifest ships a sluice.yaml")
	}
}

// sluiceMetricNames collects the metric names the code registers.
func sluiceMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	re := regexp.MustCompile(`(?:Name:\s+|gauge\()"(sluice_\w+)"`)
	for _, dir := range []string{"../../../sink", "../../../sources/capture", "../../../backfill", "../../../schemas", "."} {
		files, _ := filepath.Glob(dir + "/*.go")
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				names[m[1]] = true
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in the code", len(names))
	}
	return names
}

// checkExpr fails when a query names a sluice metric the code does not
// export (histograms add _bucket, _sum, _count).
func checkExpr(t *testing.T, where, expr string, names map[string]bool) {
	t.Helper()
	for _, n := range regexp.MustCompile(`sluice_\w+`).FindAllString(expr, -1) {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
		if !names[n] && !names[base] {
			t.Errorf("%s: %s is not a metric sluice exports", where, n)
		}
	}
}

// The alert rules have the shape Prometheus loads and query only metrics
// sluice exports; so do the Grafana dashboard's panels.
func TestPrometheusRulesAndDashboard(t *testing.T) {
	names := sluiceMetricNames(t)
	b, err := os.ReadFile("../../../deploy/prometheus/sluice-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("sluice-rules.yaml: %v", err)
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts++
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v lacks alert, expr, severity or summary", r)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			checkExpr(t, "rule "+r.Alert, r.Expr, names)
		}
	}
	for _, want := range []string{"SluiceLagHigh", "SluiceLogGap"} {
		if !strings.Contains(string(b), "alert: "+want) {
			t.Errorf("no %s alert", want)
		}
	}
	b, err = os.ReadFile("../../../deploy/grafana/sluice-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("sluice-dashboard.json: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			checkExpr(t, "panel "+p.Title, tg.Expr, names)
		}
	}
	t.Logf("%d alert rules, %d panels, %d metric names", alerts, len(dash.Panels), len(names))
}
