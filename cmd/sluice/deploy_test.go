package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"
)

// Every YAML file under deploy/ parses, and every sluice.yaml a manifest
// ships is accepted by the strict config decoder.
func TestDeployManifests(t *testing.T) {
	t.Setenv("POD_NAME", "sluice-0")
	t.Setenv("NATS_ADMIN_PASSWORD", "x")
	t.Setenv("NATS_ANALYTICS_PASSWORD", "y")
	files, err := filepath.Glob("../../deploy/*/*.yaml")
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
			if _, err := ParseConfig(f, []byte(m.Data["sluice.yaml"])); err != nil {
				t.Errorf("%s: the shipped sluice.yaml is rejected: %v", f, err)
			}
		}
	}
	if configs == 0 {
		t.Error("no manifest ships a sluice.yaml")
	}
}
