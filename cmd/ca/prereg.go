package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/registry"
)

// cmdDevicesPreregister is 'ca devices preregister': one device from flags,
// or many from a CSV file (serial,macs,ek_pub_file) — a bad row never stops
// the good ones; progress goes to stderr and every failed row is reported.
func cmdDevicesPreregister(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	var macs listFlag
	fs := newFlags("devices preregister", stderr)
	af.register(fs)
	serial := fs.String("serial", "", "device serial")
	fs.Var(&macs, "mac", "MAC address (repeatable)")
	ekPub := fs.String("ek-pub", "", "PEM file of the TPM's EK public key (RSA)")
	csvFile := fs.String("csv", "", "bulk: CSV with the columns serial,macs,ek_pub_file (macs separated by ';'; paths relative to the CSV)")
	workers := fs.Int("parallel", 4, "bulk: requests in flight")
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	switch {
	case *csvFile != "" && (*serial != "" || *ekPub != "" || len(macs) > 0):
		return fmt.Errorf("%w: use --csv or --serial/--mac/--ek-pub, not both", errUsage)
	case *csvFile == "" && (*serial == "" || *ekPub == ""):
		return fmt.Errorf("%w: --serial and --ek-pub are required (or --csv FILE)", errUsage)
	case *workers < 1 || *workers > 64:
		return fmt.Errorf("%w: --parallel must be 1..64", errUsage)
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	if *csvFile == "" {
		pub, err := os.ReadFile(*ekPub)
		if err != nil {
			return fmt.Errorf("%w: --ek-pub: %v", errUsage, err)
		}
		p, err := c.Preregister(ctx, &wire.PreregisterRequest{Serial: *serial, MACs: macs, EKPub: string(pub)})
		if err != nil {
			return fmt.Errorf("preregister %s: %w", *serial, err)
		}
		if af.output == "json" {
			return printJSON(stdout, p)
		}
		fmt.Fprintf(stdout, "pre-registered %s with EK %s\n", p.Serial, p.EKHash)
		return nil
	}
	return preregisterCSV(ctx, c, *csvFile, *workers, af.output == "json", stdout, stderr)
}

// csvRow is one line of a bulk pre-registration.
type csvRow struct {
	line int
	req  wire.PreregisterRequest
	err  error // a row that could not even be read
}

// rowResult is the outcome of one row.
type rowResult struct {
	Line   int    `json:"line"`
	Serial string `json:"serial"`
	EKHash string `json:"ek_hash,omitempty"`
	Error  string `json:"error,omitempty"`
}

func readCSV(path string) ([]csvRow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --csv: %v", errUsage, err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.Comment = '#'
	base := filepath.Dir(path)
	var rows []csvRow
	for line := 1; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if line == 1 && strings.EqualFold(strings.TrimSpace(rec[0]), "serial") {
			continue // header
		}
		row := csvRow{line: line}
		if len(rec) != 3 {
			row.err = fmt.Errorf("want 3 columns (serial,macs,ek_pub_file), got %d", len(rec))
			rows = append(rows, row)
			continue
		}
		row.req.Serial = strings.TrimSpace(rec[0])
		for _, m := range strings.Split(rec[1], ";") {
			if m = strings.TrimSpace(m); m != "" {
				row.req.MACs = append(row.req.MACs, m)
			}
		}
		p := strings.TrimSpace(rec[2])
		if !filepath.IsAbs(p) {
			p = filepath.Join(base, p)
		}
		pub, err := os.ReadFile(p)
		if err != nil {
			row.err = fmt.Errorf("ek_pub_file: %v", err)
		}
		row.req.EKPub = string(pub)
		rows = append(rows, row)
	}
}

func preregisterCSV(ctx context.Context, c *client.Client, path string, workers int, asJSON bool, stdout, stderr io.Writer) error {
	rows, err := readCSV(path)
	if err != nil {
		return err
	}
	results := make([]rowResult, len(rows))
	var done, failed atomic.Int64
	stop := make(chan struct{})
	var progress sync.WaitGroup
	progress.Add(1)
	go func() {
		defer progress.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			drawProgress(stderr, int(done.Load()), len(rows), int(failed.Load()))
			select {
			case <-stop:
				drawProgress(stderr, int(done.Load()), len(rows), int(failed.Load()))
				fmt.Fprintln(stderr)
				return
			case <-t.C:
			}
		}
	}()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				row := rows[i]
				res := rowResult{Line: row.line, Serial: row.req.Serial}
				err := row.err
				if err == nil {
					var p *wire.Preregistration
					if p, err = c.Preregister(ctx, &row.req); err == nil {
						res.EKHash = p.EKHash
					}
				}
				if err != nil {
					res.Error = err.Error()
					failed.Add(1)
				}
				results[i] = res
				done.Add(1)
			}
		}()
	}
	for i := range rows {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(stop)
	progress.Wait()

	if asJSON {
		if err := printJSON(stdout, results); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%d rows: %d pre-registered, %d failed\n", len(rows), len(rows)-int(failed.Load()), failed.Load())
		for _, r := range results {
			if r.Error != "" {
				fmt.Fprintf(stdout, "line %d (serial %q): %s\n", r.Line, r.Serial, r.Error)
			}
		}
	}
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d of %d rows failed (listed above); fix them and run again with only those rows", n, len(rows))
	}
	return nil
}

// drawProgress redraws a one-line progress bar.
func drawProgress(w io.Writer, done, total, failed int) {
	const width = 30
	filled := 0
	if total > 0 {
		filled = done * width / total
	}
	fmt.Fprintf(w, "\r[%s%s] %d/%d, %d failed", strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, total, failed)
}

// cmdTPMRootsAdd is 'ca tpm roots add FILE': trust a TPM manufacturer root
// for EK certificates, or add a manufacturer intermediate that completes
// their chains (every replica sees it at the next challenge, no restart).
func cmdTPMRootsAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("tpm roots add FILE", stderr)
	af.register(fs)
	file, err := parseWithTarget(fs, args, "root or intermediate certificate file")
	if err != nil {
		return err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	r, err := c.AddTPMRoot(ctx, &wire.AddTPMRootRequest{PEM: string(b)})
	if err != nil {
		return fmt.Errorf("add TPM root: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, r)
	}
	if r.Kind == string(registry.TPMIntermediate) {
		fmt.Fprintf(stdout, "added TPM manufacturer intermediate %s (%s): EK chains through it are completed; it adds no trust by itself\n", r.Subject, r.Fingerprint)
	} else {
		fmt.Fprintf(stdout, "trusting TPM manufacturer root %s (%s)\n", r.Subject, r.Fingerprint)
	}
	if cfg, err := LoadConfig(af.config); err == nil && len(cfg.TPM.EKRoots) == 0 && !cfg.TPM.Enabled {
		fmt.Fprintf(stderr, "note: TPM attestation enrollment is off in %s (no tpm.ek_roots, tpm.enabled false): set tpm.enabled: true and restart ca serve, or devices get 404 tpm-disabled\n", af.config)
	}
	return nil
}

// cmdTPMRootsList is 'ca tpm roots list'.
func cmdTPMRootsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("tpm roots list", stderr)
	af.register(fs)
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	roots, err := c.ListTPMRoots(ctx)
	if err != nil {
		return fmt.Errorf("list TPM roots: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, roots)
	}
	for _, r := range roots {
		fmt.Fprintf(stdout, "%s  %-12s  %s  added %s by %s\n", r.Fingerprint, r.Kind, r.Subject, fmtTime(r.CreatedAt), r.AddedBy)
	}
	return nil
}
