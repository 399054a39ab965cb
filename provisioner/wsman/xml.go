package wsman

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// Node is a namespace-agnostic XML element. AMT firmware, MeshCentral and
// simulators use different prefixes for the same namespaces, so responses
// are searched by local name only.
type Node struct {
	Name     string
	Text     string
	Children []*Node
}

// ParseXML reads a document into a tree of local names.
func ParseXML(b []byte) (*Node, error) {
	dec := xml.NewDecoder(bytes.NewReader(b))
	root := &Node{}
	stack := []*Node{root}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("xml: %w", err)
		}
		top := stack[len(stack)-1]
		switch t := tok.(type) {
		case xml.StartElement:
			n := &Node{Name: t.Name.Local}
			top.Children = append(top.Children, n)
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			top.Text += string(t)
		}
	}
	if len(root.Children) == 0 {
		return nil, fmt.Errorf("xml: no element")
	}
	return root.Children[0], nil
}

// Find returns the first descendant (depth first) with the local name.
func (n *Node) Find(name string) *Node {
	if n == nil {
		return nil
	}
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
		if f := c.Find(name); f != nil {
			return f
		}
	}
	return nil
}

// FindAll returns every descendant with the local name.
func (n *Node) FindAll(name string) []*Node {
	if n == nil {
		return nil
	}
	var out []*Node
	for _, c := range n.Children {
		if c.Name == name {
			out = append(out, c)
		}
		out = append(out, c.FindAll(name)...)
	}
	return out
}

// Value is the trimmed text of the first descendant with the local name,
// "" when absent.
func (n *Node) Value(name string) string {
	if f := n.Find(name); f != nil {
		return strings.TrimSpace(f.Text)
	}
	return ""
}
