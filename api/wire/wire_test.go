package wire

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// TestSlugsDistinct reads problems.go: every Slug constant has its own value,
// a lowercase kebab-case word, so clients can switch on them.
func TestSlugsDistinct(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "problems.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, sp := range gd.Specs {
			vs := sp.(*ast.ValueSpec)
			for i, n := range vs.Names {
				v, err := strconv.Unquote(vs.Values[i].(*ast.BasicLit).Value)
				if err != nil {
					t.Fatal(err)
				}
				if prev, dup := seen[v]; dup {
					t.Errorf("%s and %s share the slug %q", prev, n.Name, v)
				}
				seen[v] = n.Name
				if v == "" || strings.Trim(v, "abcdefghijklmnopqrstuvwxyz-") != "" {
					t.Errorf("%s = %q: want lowercase letters and hyphens", n.Name, v)
				}
			}
		}
	}
	if len(seen) < 30 {
		t.Errorf("read %d slugs from problems.go, want every one (30+)", len(seen))
	}
}
