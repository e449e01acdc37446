package client

import (
	"context"
	"net/http"
	"net/url"

	"devpki/api/wire"
)

// CreateAdmin makes an admin and issues its first certificate for the key
// in req.CSR (POST /v1/admin/admins, role admin).
func (c *Client) CreateAdmin(ctx context.Context, req *wire.AdminCreateRequest) (*wire.AdminCertificate, error) {
	var out wire.AdminCertificate
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/admins", "", req, &out)
}

// ListAdmins lists the admins the caller may see.
func (c *Client) ListAdmins(ctx context.Context) (*wire.AdminList, error) {
	var out wire.AdminList
	return &out, c.getJSON(ctx, "/v1/admin/admins", nil, &out)
}

// RevokeAdmin revokes admin name and its certificates.
func (c *Client) RevokeAdmin(ctx context.Context, name string) (*wire.AdminRevokeResponse, error) {
	var out wire.AdminRevokeResponse
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/admins/"+url.PathEscape(name)+"/revoke", "", struct{}{}, &out)
}

// RenewAdmin renews the caller's own admin certificate for the key in
// req.CSR.
func (c *Client) RenewAdmin(ctx context.Context, req *wire.AdminRenewRequest) (*wire.AdminCertificate, error) {
	var out wire.AdminCertificate
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/renew", "", req, &out)
}

// ListTenants lists the tenants the caller may see.
func (c *Client) ListTenants(ctx context.Context) (*wire.TenantList, error) {
	var out wire.TenantList
	return &out, c.getJSON(ctx, "/v1/admin/tenants", nil, &out)
}

// CreateTenant creates a tenant with its policy (super-admins only).
func (c *Client) CreateTenant(ctx context.Context, req *wire.TenantCreateRequest) (*wire.Tenant, error) {
	var out wire.Tenant
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/tenants", "", req, &out)
}

// UpdateTenant changes tenant name's policy (super-admins only).
func (c *Client) UpdateTenant(ctx context.Context, name string, req *wire.TenantPolicyRequest) (*wire.Tenant, error) {
	var out wire.Tenant
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/tenants/"+url.PathEscape(name), "", req, &out)
}
