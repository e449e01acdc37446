// Package client is the typed Go client of the devpki CA API (the enroll
// agent and the admin CLI use it). The JSON types it sends and receives live
// in package api/wire, shared with the server.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"devpki/api/wire"
)

// Limits on what the client reads from a reply.
const (
	maxJSONBody  = 1 << 20 // 1 MiB: an enroll reply is a few KiB
	maxPEMBody   = 1 << 20
	excerptBytes = 512 // of a non-problem error body, kept in ResponseError.Body
)

// DefaultUserAgent is sent when WithUserAgent is not given.
const DefaultUserAgent = "devpki-client/0"

// Client calls the devpki CA API. It is safe for concurrent use. Build it with New;
// the zero value is not usable.
type Client struct {
	base      *url.URL
	hc        *http.Client
	userAgent string
}

type options struct {
	roots       *x509.CertPool
	certs       []tls.Certificate
	httpClient  *http.Client
	transport   http.RoundTripper
	userAgent   string
	noKeepAlive bool
}

// Option configures a Client built by New.
type Option func(*options)

// WithRoots makes the client trust only the roots in pool for the server's
// certificate. Without it the system roots are used.
func WithRoots(pool *x509.CertPool) Option {
	return func(o *options) { o.roots = pool }
}

// WithClientCertificate presents cert in the TLS handshake (mutual TLS), as the
// admin API and /v1/renew require.
func WithClientCertificate(cert tls.Certificate) Option {
	return func(o *options) { o.certs = append(o.certs, cert) }
}

// WithHTTPClient makes the client send every request through hc as given. It
// cannot be combined with the options that build a transport (WithRoots,
// WithClientCertificate, WithTransport, WithNewConnectionPerRequest).
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) { o.httpClient = hc }
}

// WithTransport replaces the transport the client builds. It cannot be combined
// with WithRoots, WithClientCertificate, WithHTTPClient or WithNewConnectionPerRequest:
// configure TLS on rt itself.
func WithTransport(rt http.RoundTripper) Option {
	return func(o *options) { o.transport = rt }
}

// WithUserAgent sets the User-Agent header of every request (DefaultUserAgent
// when empty or not given).
func WithUserAgent(ua string) Option {
	return func(o *options) { o.userAgent = ua }
}

// WithNewConnectionPerRequest disables keep-alive so that each request makes a
// fresh TCP and TLS connection, as a device at first power-on does. Load tools
// use it; ordinary callers should not.
func WithNewConnectionPerRequest() Option {
	return func(o *options) { o.noKeepAlive = true }
}

// New returns a client of the CA at baseURL ("https://ca.example:8443", with an
// optional path prefix). Connections use TLS 1.2 or later.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	builds := o.roots != nil || len(o.certs) > 0 || o.noKeepAlive
	switch {
	case o.httpClient != nil && (builds || o.transport != nil):
		return nil, errors.New("client: WithHTTPClient cannot be combined with transport options")
	case o.transport != nil && builds:
		return nil, errors.New("client: WithTransport cannot be combined with WithRoots, WithClientCertificate or WithNewConnectionPerRequest")
	}
	c := &Client{base: u, userAgent: o.userAgent}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}
	switch {
	case o.httpClient != nil:
		c.hc = o.httpClient
	case o.transport != nil:
		c.hc = &http.Client{Transport: o.transport}
	default:
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{
			MinVersion:   tls.VersionTLS12,
			RootCAs:      o.roots,
			Certificates: o.certs,
		}
		tr.DisableKeepAlives = o.noKeepAlive
		c.hc = &http.Client{Transport: tr}
	}
	return c, nil
}

func parseBaseURL(baseURL string) (*url.URL, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: parse base URL %q: %w", baseURL, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("client: base URL %q: scheme must be https", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q has no host", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q must not have a query or fragment", baseURL)
	}
	return u, nil
}

// Enroll sends a CSR with a bootstrap token to POST /v1/enroll. A non-2xx reply
// is returned as a *ResponseError; when the server sent problem+json, errors.As
// finds the *Problem in it. IsTransient and RetryAfter classify the error.
func (c *Client) Enroll(ctx context.Context, token string, req *wire.EnrollRequest) (*wire.EnrollResponse, error) {
	if token == "" {
		return nil, errors.New("client: enroll: empty bootstrap token")
	}
	var resp wire.EnrollResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/enroll", token, req, &resp); err != nil {
		return nil, err
	}
	if resp.Certificate == "" {
		return nil, errors.New("client: enroll: reply has no certificate")
	}
	return &resp, nil
}

// CreateToken mints a bootstrap token through POST /v1/admin/tokens. The
// client must carry an admin certificate (WithClientCertificate).
func (c *Client) CreateToken(ctx context.Context, req *wire.TokenCreateRequest) (*wire.TokenCreateResponse, error) {
	var resp wire.TokenCreateResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/admin/tokens", "", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Roots returns the CA's root certificates from GET /v1/ca/roots. Over a client
// that does not yet trust the CA, use FetchRootsPinned instead.
func (c *Client) Roots(ctx context.Context) ([]*x509.Certificate, error) {
	return c.getPEM(ctx, "/v1/ca/roots")
}

// Chain returns the issuing chain from GET /v1/ca/chain, the issuing CA first.
func (c *Client) Chain(ctx context.Context) ([]*x509.Certificate, error) {
	return c.getPEM(ctx, "/v1/ca/chain")
}

func (c *Client) endpoint(path string) string {
	return c.base.JoinPath(path).String()
}

func (c *Client) doJSON(ctx context.Context, method, path, token string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("client: encode %s %s: %w", method, path, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint(path), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, application/problem+json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkStatus(req, resp); err != nil {
		return err
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("client: decode reply to %s %s: %w", method, path, err)
	}
	return nil
}

func (c *Client) getPEM(ctx context.Context, path string) ([]*x509.Certificate, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint(path), nil)
	if err != nil {
		return nil, fmt.Errorf("client: GET %s: %w", path, err)
	}
	req.Header.Set("Accept", "application/pem-certificate-chain, application/x-pem-file, */*")
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return readPEMReply(req, resp)
}

func (c *Client) send(req *http.Request) (*http.Response, error) {
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err // a *url.Error: names the method and URL
	}
	return resp, nil
}

func readPEMReply(req *http.Request, resp *http.Response) ([]*x509.Certificate, error) {
	if err := checkStatus(req, resp); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPEMBody+1))
	if err != nil {
		return nil, fmt.Errorf("client: read %s: %w", req.URL.Path, err)
	}
	if len(b) > maxPEMBody {
		return nil, fmt.Errorf("client: %s: reply larger than %d bytes", req.URL.Path, maxPEMBody)
	}
	certs, err := ParseCertificatesPEM(b)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", req.URL.Path, err)
	}
	return certs, nil
}

// checkStatus turns a non-2xx reply into a *ResponseError.
func checkStatus(req *http.Request, resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	e := &ResponseError{
		Method:     req.Method,
		URL:        req.URL.Redacted(),
		StatusCode: resp.StatusCode,
		Status:     resp.Status,
		Header:     resp.Header.Clone(),
		received:   time.Now(),
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" {
		var p wire.Problem
		if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody)).Decode(&p); err == nil {
			if p.Status == 0 {
				p.Status = resp.StatusCode
			}
			e.Problem = &p
			return e
		}
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, excerptBytes+1))
	e.Body = excerpt(b)
	return e
}

func excerpt(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	if len(b) > excerptBytes {
		s = strings.ToValidUTF8(string(b[:excerptBytes]), "") + "…"
	}
	return strings.TrimSpace(s)
}

// ParseCertificatesPEM parses every CERTIFICATE block of a PEM bundle, in order.
// Other block types are skipped; a bundle with no certificate is an error.
func ParseCertificatesPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}
