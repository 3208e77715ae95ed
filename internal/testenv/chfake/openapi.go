// Package chfake is a fake Cloud Hypervisor for tests, built from its
// OpenAPI description (the shared reference data): an API server on a
// unix socket that validates every request body against the OpenAPI
// schemas and keeps the VM state machine, the hybrid vsock socket with a
// fake guest agent behind it, snapshots and restores as Cloud
// Hypervisor's own code writes and reads them, and a fake virtiofsd.
// Tests run it as a process (the test binary re-executed as the
// "cloud-hypervisor" binary, see Main) or in-process (New).
//
// Cloud Hypervisor cannot run on the machine this was written on: what
// these tests prove about it is that the requests match its OpenAPI
// specification and that the driver and backend do the right things
// with a VMM that behaves as this fake does. Nothing here was checked
// against Cloud Hypervisor itself.
package chfake

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// specRel is Cloud Hypervisor's OpenAPI description in the project's
// shared reference data, relative to the repository root: CI clones the
// repository next to shared/.
const specRel = "../shared/reference/cloud-hypervisor/cloud-hypervisor.yaml"

// SpecFile is $KUASAR_CH_OPENAPI, else specRel resolved against the
// repository root: the nearest directory at or above the working
// directory (the package's, under go test) that holds go.mod.
func SpecFile() (string, error) {
	if p := os.Getenv("KUASAR_CH_OPENAPI"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, specRel), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod at or above the working directory: %w", fs.ErrNotExist)
		}
		dir = parent
	}
}

// OpenAPI is the part of an OpenAPI 3 document the checker needs.
type OpenAPI struct {
	Paths      map[string]map[string]operation `yaml:"paths"`
	Components struct {
		Schemas map[string]*schema `yaml:"schemas"`
	} `yaml:"components"`
}

type operation struct {
	RequestBody *struct {
		Required bool `yaml:"required"`
		Content  map[string]struct {
			Schema *schema `yaml:"schema"`
		} `yaml:"content"`
	} `yaml:"requestBody"`
	Responses map[string]any `yaml:"responses"`
}

type schema struct {
	Ref                  string             `yaml:"$ref"`
	Type                 string             `yaml:"type"`
	Format               string             `yaml:"format"`
	Required             []string           `yaml:"required"`
	Properties           map[string]*schema `yaml:"properties"`
	Items                *schema            `yaml:"items"`
	Enum                 []any              `yaml:"enum"`
	Minimum              *float64           `yaml:"minimum"`
	AdditionalProperties any                `yaml:"additionalProperties"`
}

// ReadOpenAPI reads and decodes the OpenAPI description (SpecFile).
func ReadOpenAPI() (*OpenAPI, error) {
	p, err := SpecFile()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var d OpenAPI
	if err := yaml.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &d, nil
}

// LoadOpenAPI is ReadOpenAPI for a test, which is skipped (saying where
// the file is looked for) when the description is absent. It hands the
// description's absolute path to fake VMMs the test starts
// ($KUASAR_CH_OPENAPI).
func LoadOpenAPI(t testing.TB) *OpenAPI {
	t.Helper()
	d, err := ReadOpenAPI()
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("Cloud Hypervisor's OpenAPI description is absent (%v): clone the repository next to shared/ (%s from its root) or set KUASAR_CH_OPENAPI to cloud-hypervisor.yaml", err, specRel)
	}
	if err != nil {
		t.Fatalf("Cloud Hypervisor OpenAPI description: %v", err)
	}
	if p, err := SpecFile(); err == nil && os.Getenv("KUASAR_CH_OPENAPI") == "" {
		if abs, err := filepath.Abs(p); err == nil {
			t.Setenv("KUASAR_CH_OPENAPI", abs)
		}
	}
	return d
}

// ValidateSchema checks a decoded JSON value (numbers as json.Number)
// against the schema named name in the description's components: every
// violation, with JSON paths starting at path.
func (d *OpenAPI) ValidateSchema(path string, v any, name string) []string {
	return d.validate(path, v, &schema{Ref: "#/components/schemas/" + name})
}

func (d *OpenAPI) resolve(s *schema) (*schema, error) {
	for s != nil && s.Ref != "" {
		name := strings.TrimPrefix(s.Ref, "#/components/schemas/")
		n, ok := d.Components.Schemas[name]
		if !ok {
			return nil, fmt.Errorf("unresolved $ref %s", s.Ref)
		}
		s = n
	}
	return s, nil
}

// validate checks a decoded JSON value against a schema: types, required
// properties, unknown properties, enums and minimums. It returns every
// violation, with JSON paths.
func (d *OpenAPI) validate(path string, v any, s *schema) []string {
	s, err := d.resolve(s)
	if err != nil {
		return []string{path + ": " + err.Error()}
	}
	if s == nil {
		return nil
	}
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, path+": "+fmt.Sprintf(f, a...)) }
	if len(s.Enum) > 0 {
		ok := false
		for _, e := range s.Enum {
			if fmt.Sprint(e) == fmt.Sprint(v) {
				ok = true
			}
		}
		if !ok {
			bad("%v not in enum %v", v, s.Enum)
		}
	}
	typ := s.Type
	if typ == "" && s.Properties != nil {
		typ = "object"
	}
	switch typ {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("want object, got %T", v)
			return errs
		}
		for _, r := range s.Required {
			if _, ok := m[r]; !ok {
				bad("missing required property %q", r)
			}
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ps, ok := s.Properties[k]
			if !ok {
				if s.AdditionalProperties == nil || s.AdditionalProperties == false {
					bad("unknown property %q", k)
				}
				continue
			}
			errs = append(errs, d.validate(path+"."+k, m[k], ps)...)
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad("want array, got %T", v)
			return errs
		}
		for i, e := range a {
			errs = append(errs, d.validate(fmt.Sprintf("%s[%d]", path, i), e, s.Items)...)
		}
	case "string":
		if _, ok := v.(string); !ok {
			bad("want string, got %T", v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("want boolean, got %T", v)
		}
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			bad("want %s, got %T", typ, v)
			return errs
		}
		f, _ := n.Float64()
		if typ == "integer" && strings.ContainsAny(n.String(), ".eE") {
			bad("want integer, got %s", n)
		}
		if s.Minimum != nil && f < *s.Minimum {
			bad("%s below minimum %v", n, *s.Minimum)
		}
	}
	return errs
}
