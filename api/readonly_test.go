package api_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"devpki/api"
)

// TestStoreIsReadOnly: the only store the API holds reads. Every state
// change goes through provision.
func TestStoreIsReadOnly(t *testing.T) {
	typ := reflect.TypeOf((*api.Store)(nil)).Elem()
	for i := 0; i < typ.NumMethod(); i++ {
		name := typ.Method(i).Name
		if name != "Ping" && !strings.HasPrefix(name, "Get") && !strings.HasPrefix(name, "List") {
			t.Errorf("api.Store has %s, which is not a read", name)
		}
	}
}

// TestAPIDoesNotWrite: package api (not its tests) neither imports the
// store implementation, directly or through another package, nor calls a
// registry write or builds an audit event.
func TestAPIDoesNotWrite(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "devpki/api").Output()
	if err != nil {
		t.Fatalf("go list -deps devpki/api: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "devpki/pkg/registry/sqlstore") || strings.HasPrefix(dep, "gorm.io/") {
			t.Errorf("package api depends on %s", dep)
		}
	}

	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	// The write methods of registry.Store that no provision type shares a
	// name with (provision's Revoke*, Renew, Enroll, DismissQuarantine,
	// ReleaseQuarantine, ReinstateDevice, CreateAdmin, RevokeAdmin are how api
	// writes); calls of the
	// others on a Store are caught below.
	writes := map[string]bool{
		"AppendAudit": true, "CreateTenant": true, "SetTenantRequireTPM": true, "CreateToken": true,
		"RecordCertificate": true, "NextCRLNumber": true, "RequireRekey": true, "PutAdmin": true,
		"PutPreregistration": true, "PutTPMRoot": true, "HoldClaim": true, "UpdateTenantPolicy": true,
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if strings.Contains(imp.Path.Value, "sqlstore") {
				t.Errorf("%s imports %s", name, imp.Path.Value)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				// Methods of the same name on provision's types (Revoke*,
				// Renew, Enroll, ...) are fine; the store's are not.
				if writes[n.Sel.Name] {
					t.Errorf("%s: calls %s", fset.Position(n.Pos()), n.Sel.Name)
				}
				if x, ok := n.X.(*ast.SelectorExpr); ok && x.Sel.Name == "Store" && !isRead(n.Sel.Name) {
					t.Errorf("%s: calls Store.%s", fset.Position(n.Pos()), n.Sel.Name)
				}
			case *ast.CompositeLit:
				if sel, ok := n.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "AuditEvent" && isIdent(sel.X, "registry") {
					t.Errorf("%s: builds a registry.AuditEvent", fset.Position(n.Pos()))
				}
			}
			return true
		})
	}
}

func isRead(name string) bool {
	return name == "Ping" || strings.HasPrefix(name, "Get") || strings.HasPrefix(name, "List")
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}
