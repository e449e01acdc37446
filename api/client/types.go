// Package client is the typed Go client of the devpki CA API, and the home of
// the JSON wire types shared by the server (package api) and its clients.
package client

import (
	"fmt"
	"time"
)

// EnrollRequest is the body of POST /v1/enroll (and, later, /v1/renew).
type EnrollRequest struct {
	CSR string `json:"csr"` // PEM "CERTIFICATE REQUEST"
}

// EnrollResponse is the 201 reply to an enrollment or renewal.
type EnrollResponse struct {
	DeviceID    string    `json:"device_id"`
	Certificate string    `json:"certificate"` // PEM leaf
	Chain       []string  `json:"chain"`       // PEM intermediates, leaf's issuer first (root not included)
	RenewAfter  time.Time `json:"renew_after"` // RFC 3339
}

// TokenCreateRequest is the body of POST /v1/admin/tokens.
type TokenCreateRequest struct {
	Tenant string `json:"tenant,omitempty"` // default tenant when empty
	Serial string `json:"serial,omitempty"` // bind the token to one serial
	TTL    string `json:"ttl,omitempty"`    // Go duration, default "24h"
	Uses   int    `json:"uses,omitempty"`   // default 1
}

// TokenCreateResponse is the 201 reply: the secret token, shown once.
type TokenCreateResponse struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	Tenant    string    `json:"tenant"`
	Serial    string    `json:"serial,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	Uses      int       `json:"uses"`
}

// ProblemTypePrefix starts every Problem.Type.
const ProblemTypePrefix = "urn:devpki:problem:"

// Problem is an RFC 9457 application/problem+json error body.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// Error makes a Problem usable as an error by clients.
func (p *Problem) Error() string {
	if p.Detail != "" {
		return fmt.Sprintf("%s (%d %s): %s", p.Title, p.Status, p.Type, p.Detail)
	}
	return fmt.Sprintf("%s (%d %s)", p.Title, p.Status, p.Type)
}

// Slug returns the part of Type after ProblemTypePrefix ("token-spent", ...).
func (p *Problem) Slug() string {
	if len(p.Type) > len(ProblemTypePrefix) && p.Type[:len(ProblemTypePrefix)] == ProblemTypePrefix {
		return p.Type[len(ProblemTypePrefix):]
	}
	return p.Type
}
