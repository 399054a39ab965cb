package boot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// maxConfigTree bounds what is copied off the config disk: a config, its
// certificates and password files, never a data set.
const maxConfigTree = 16 << 20

// CopyConfigTree copies the config disk's files (everything but the data
// directory and lost+found) into dst, so that the config's relative paths
// still resolve while the disk itself stays the data disk's, and the
// overrides below never touch the operator's file.
func CopyConfigTree(src, dst string) error {
	var total int64
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel == DataDir || rel == "lost+found" {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case !d.Type().IsRegular():
			return nil
		}
		if total += info.Size(); total > maxConfigTree {
			return fmt.Errorf("config disk holds more than %d MiB besides %s/: not a config", maxConfigTree>>20, DataDir)
		}
		return copyFile(path, target, info.Mode().Perm())
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// Overrides are the node settings the image decides, not the file.
type Overrides struct {
	NodeID  string // from branchbox.node=; empty keeps the file's
	DataDir string // where the disks put state; always set
}

// Member is what a branchbox.yaml makes the box: "witness" or "voter"
// for a cluster member (node.cluster.role), "single" without
// node.cluster. branchbox validates the file; this only labels the banner.
func Member(data []byte) string {
	var f struct {
		Node struct {
			Cluster *struct {
				Role string `yaml:"role"`
			} `yaml:"cluster"`
		} `yaml:"node"`
	}
	switch {
	case yaml.Unmarshal(data, &f) != nil || f.Node.Cluster == nil:
		return "single"
	case f.Node.Cluster.Role == "witness":
		return "witness"
	}
	return "voter"
}

// Override rewrites node.id and node.data_dir in a branchbox.yaml, keeping
// everything else (comments included) as written; branchbox serve then
// validates the result as usual. It returns the values it replaced.
func Override(data []byte, o Overrides) (out []byte, was Overrides, err error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, was, fmt.Errorf("%s: %w", ConfigFile, err)
	}
	if doc.Kind == 0 { // an empty file
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, was, errors.New(ConfigFile + ": not a YAML mapping")
	}
	node := mapping(doc.Content[0], "node")
	if node == nil {
		return nil, was, errors.New(ConfigFile + ": node is not a mapping")
	}
	if o.NodeID != "" {
		was.NodeID = set(node, "id", o.NodeID)
	}
	was.DataDir = set(node, "data_dir", o.DataDir)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, was, err
	}
	return buf.Bytes(), was, nil
}

// mapping returns m's mapping value under key, adding an empty one when
// absent; nil when the key holds something else.
func mapping(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			v := m.Content[i+1]
			if v.Tag == "!!null" {
				*v = yaml.Node{Kind: yaml.MappingNode}
			}
			if v.Kind != yaml.MappingNode {
				return nil
			}
			return v
		}
	}
	v := &yaml.Node{Kind: yaml.MappingNode}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, v)
	return v
}

// set puts a string scalar under key and returns the previous value.
func set(m *yaml.Node, key, val string) string {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			old := m.Content[i+1].Value
			m.Content[i+1] = &yaml.Node{Kind: yaml.ScalarNode, Value: val}
			return old
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &yaml.Node{Kind: yaml.ScalarNode, Value: val})
	return ""
}
