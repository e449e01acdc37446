package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"devpki/api/wire"
)

// ExportAudit copies the audit export (JSON lines; see `ca audit verify
// --file`) to w: events at or after since when it is not zero, of the
// tenant named tenant when it is not empty (a tenant admin always gets its
// own tenant's). It returns the bytes copied.
func (c *Client) ExportAudit(ctx context.Context, since time.Time, tenant string, w io.Writer) (int64, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if tenant != "" {
		q.Set("tenant", tenant)
	}
	u := c.endpoint("/v1/admin/audit/export")
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("client: GET audit export: %w", err)
	}
	req.Header.Set("Accept", "application/x-ndjson, application/problem+json")
	resp, err := c.send(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if err := checkStatus(req, resp); err != nil {
		return 0, err
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("client: read audit export: %w", err)
	}
	return n, nil
}

// ListRefusals returns anonymous refusal aggregates with ID > after.
func (c *Client) ListRefusals(ctx context.Context, after int64, limit int) (*wire.RefusalList, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out wire.RefusalList
	return &out, c.getJSON(ctx, "/v1/admin/audit/refusals", q, &out)
}
