package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// FieldError is one problem with one field.
type FieldError struct {
	Path string
	Msg  string
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errors is every problem found in a config, in file order.
type Errors []FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads, strictly parses and validates a config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(b, filepath.Dir(abs))
}

// Parse strictly decodes YAML, applies defaults and validates the result.
// dir is where relative paths in the file are resolved from. The error,
// when not nil, is an Errors listing every problem.
func Parse(data []byte, dir string) (*Config, error) {
	cfg := &Config{Dir: dir}
	var errs Errors
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{{Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	if len(root.Content) > 0 {
		decodeStrict(root.Content[0], reflect.ValueOf(cfg).Elem(), "", &errs)
	}
	cfg.applyDefaults()
	errs = append(errs, cfg.validate()...)
	if len(errs) > 0 {
		return cfg, errs
	}
	return cfg, nil
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// decodeStrict walks the YAML tree beside the Go value so that each
// problem is reported with its field path, and carries on after one so
// that all are found in one pass.
func decodeStrict(n *yaml.Node, v reflect.Value, path string, errs *Errors) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			*errs = append(*errs, FieldError{path, cleanYAMLError(err)})
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		decodeStrict(n, nv.Elem(), path, errs)
		v.Set(nv)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			*errs = append(*errs, FieldError{path, "want a mapping of keys"})
			return
		}
		fields := yamlFields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i].Value, n.Content[i+1]
			p := joinPath(path, key)
			idx, ok := fields[key]
			switch {
			case !ok:
				*errs = append(*errs, FieldError{p, "unknown key" + suggest(key, fields)})
				continue
			case seen[key]:
				*errs = append(*errs, FieldError{p, "key given twice"})
				continue
			}
			seen[key] = true
			decodeStrict(val, v.Field(idx), p, errs)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			*errs = append(*errs, FieldError{path, "want a list"})
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			decodeStrict(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), errs)
		}
		v.Set(s)
	default:
		if n.Kind != yaml.ScalarNode {
			*errs = append(*errs, FieldError{path, "want a single value"})
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			*errs = append(*errs, FieldError{path, fmt.Sprintf("%q is not a valid %s", n.Value, kindName(v.Kind()))})
		}
	}
}

func yamlFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := range t.NumField() {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag != "" && tag != "-" {
			m[tag] = i
		}
	}
	return m
}

func joinPath(base, key string) string {
	if base == "" {
		return key
	}
	return base + "." + key
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "boolean (true/false)"
	case reflect.Int, reflect.Int64, reflect.Uint16, reflect.Uint32:
		return "number"
	}
	return k.String()
}

// suggest names the closest known key, for the typos people make.
func suggest(key string, fields map[string]int) string {
	best, bestD := "", 3
	for f := range fields {
		if d := editDistance(key, f); d < bestD || (d == bestD && f < best) {
			best, bestD = f, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func cleanYAMLError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return te.Errors[0]
	}
	return err.Error()
}

// ParseSite strictly decodes one site (YAML or JSON, in the config file's
// schema) and validates it against the rest of the configuration: others
// are the sites it must not clash with (one of the same name is the site
// being replaced), profileExists says whether a profile name is defined.
// Problems name the field as "site.<key>".
func (c *Config) ParseSite(data []byte, others []Site, profileExists func(string) bool) (Site, error) {
	var errs Errors
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil || len(root.Content) == 0 {
		return Site{}, Errors{{Path: "site", Msg: "not a valid JSON/YAML object"}}
	}
	var s Site
	decodeStrict(root.Content[0], reflect.ValueOf(&s).Elem(), "site", &errs)
	if s.LeaseTime == 0 {
		s.LeaseTime = Duration(DefaultLeaseTime)
	}
	// Profiles are checked through profileExists: the trial has none, so
	// it reports no password files and every profile reference, which is
	// skipped below.
	trial := Config{Node: c.Node, DNS: c.DNS, DHCP: c.DHCP, Provisioner: c.Provisioner, Dir: c.Dir}
	for _, o := range others {
		if o.Name != s.Name {
			trial.Sites = append(trial.Sites, o)
		}
	}
	trial.Sites = append(trial.Sites, s)
	prefix := fmt.Sprintf("sites[%d]", len(trial.Sites)-1)
	for _, e := range trial.validate() {
		switch {
		case e.Path == prefix+".profile":
		case strings.HasPrefix(e.Path, prefix):
			errs = append(errs, FieldError{"site" + strings.TrimPrefix(e.Path, prefix), e.Msg})
		case e.Path == "dhcp.relay_listen" && s.Relay:
			errs = append(errs, e)
		}
	}
	if s.Profile != "" && !profileExists(s.Profile) {
		errs = append(errs, FieldError{"site.profile", fmt.Sprintf("%q is not a defined profile", s.Profile)})
	}
	if len(errs) > 0 {
		return s, errs
	}
	return s, nil
}
