package main

// -target tpm: TPM attestation enrollments against swtpm, end to end over
// HTTPS through the real 'ca serve'.
//
// Each of -devices swtpm instances (pkg/tpm/swtpmtest, manufactured fresh,
// EK certificate from swtpm's local CA) is one device that enrolls again and
// again with pkg/tpm/tpmenroll: POST /v1/enroll/tpm/challenge, then
// ActivateCredential + a new attested key + TPM2_Certify + CSR signed in the
// TPM, then POST /v1/enroll/tpm, each request on a new TLS connection. Device
// i always claims serial LOAD-TPM-<i> with the same EK and AK, which the CA
// allows (it keeps the device id). Claim (EK read, AK creation: RSA keygen)
// runs once per device before the measurement and is reported apart. Each
// enrollment's key blob is deleted from the device's state directory once
// the certificate is back, so state does not grow.
//
// Needs swtpm and swtpm_setup (apt-get install swtpm swtpm-tools) and read
// access to swtpm's local CA (/var/lib/swtpm-localca: root). On SIGINT or
// SIGTERM the run stops and every swtpm is shut down (TPM2_Shutdown first);
// a second signal kills the tool.

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/smallstep/go-attestation/attest"

	"devpki/api/client"
	"devpki/api/client/tpmenroll"
	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/swtpmtest"
)

const (
	tpmAK         = "load-ak"
	maxDevices    = 64
	breakdownN    = 20 // sequential enrollments of device 0 timed step by step
	tpmReqTimeout = 30 * time.Second
)

// tpmFigures is the TPM part of a -target tpm result. Times are means in
// milliseconds per enrollment over the measured run unless named otherwise.
type tpmFigures struct {
	Devices int `json:"devices"`
	// Claim runs once per device, outside the measurement: EK read, AK
	// creation (RSA-2048 keygen) and its attestation parameters; ClaimAgain
	// is a second Claim with the AK in place.
	ClaimFirstMs float64 `json:"claim_first_ms"`
	ClaimAgainMs float64 `json:"claim_again_ms"`
	// Per enrollment, as the devices saw it under load.
	ChallengeRTTms float64 `json:"challenge_rtt_ms"` // HTTP round trip, new TLS connection
	AnswerMs       float64 `json:"answer_ms"`        // tpmenroll.Answer: activate + key + certify + CSR sign
	EnrollRTTms    float64 `json:"enroll_rtt_ms"`    // HTTP round trip, new TLS connection
	DeleteKeyMs    float64 `json:"delete_key_ms"`    // removing the key blob (fsync of the state dir)
	// SWTPMCPUms is the CPU time of all swtpm processes per enrollment: the
	// emulated TPM's own cost, apart from the CA's.
	SWTPMCPUms float64 `json:"swtpm_cpu_ms_per_op"`
	// Breakdown: device 0 alone after the run, breakdownN enrollments one
	// at a time, each TPM step of tpmenroll.Answer timed on its own.
	Breakdown tpmBreakdown `json:"breakdown"`
}

type tpmBreakdown struct {
	N               int     `json:"n"`
	ActivateMs      float64 `json:"activate_credential_ms"`
	AttestedKeyMs   float64 `json:"attested_key_ms"` // TPM2_Create + TPM2_Certify over the nonce
	CSRSignMs       float64 `json:"csr_sign_ms"`     // TPM2_Load + TPM2_Sign + flush, and the CSR around it
	AnswerMs        float64 `json:"answer_ms"`       // the three together
	ChallengeRTTms  float64 `json:"challenge_rtt_ms"`
	EnrollRTTms     float64 `json:"enroll_rtt_ms"`
	SWTPMCPUms      float64 `json:"swtpm_cpu_ms_per_op"`
	EnrollmentMs    float64 `json:"enrollment_ms"` // the whole enrollment, one device, no other load
	PerSecondDevice float64 `json:"per_second"`    // 1000 / EnrollmentMs
}

// tpmDevice is one swtpm with its open TPM and its enrollment state.
type tpmDevice struct {
	i        int
	inst     *swtpmtest.Instance
	tp       *tpm.TPM
	serial   string
	macs     []string
	claim    *wire.TPMChallengeRequest
	seq      int // next key number
	deviceID string
}

// tpmFleet is the -devices swtpm instances and the figures of their
// enrollments.
type tpmFleet struct {
	ctx    context.Context
	cancel context.CancelFunc
	state  string // parent of the devices' TPM state directories
	devs   []*tpmDevice
	free   chan *tpmDevice
	cl     *client.Client

	mu                         sync.Mutex
	claimFirst, claimAgain     []time.Duration
	challenge, answer, enrollD []time.Duration
	deleteKey                  []time.Duration
}

// launchTPMFleet starts n swtpm instances. Interrupt (SIGINT, SIGTERM)
// cancels the fleet's context: the run then fails fast and the deferred
// stop shuts every swtpm down. stop must be called even on error.
func launchTPMFleet(n int) (*tpmFleet, error) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		cancel() // a second interrupt kills the process
	}()
	f := &tpmFleet{ctx: ctx, cancel: cancel}
	var err error
	if f.state, err = os.MkdirTemp("", "devpki-load-tpm-"); err != nil {
		return f, err
	}
	fmt.Fprintf(os.Stderr, "launching %d swtpm instances ...\n", n)
	for i := range n {
		if ctx.Err() != nil {
			return f, errors.New("interrupted")
		}
		inst, err := swtpmtest.Launch()
		if err != nil {
			return f, fmt.Errorf("swtpm %d: %w", i, err)
		}
		f.devs = append(f.devs, &tpmDevice{
			i: i, inst: inst,
			serial: fmt.Sprintf("LOAD-TPM-%d", i),
			macs:   []string{fmt.Sprintf("02:7b:00:00:%02x:%02x", byte(i>>8), byte(i))},
		})
	}
	return f, nil
}

// stop closes the TPMs, shuts every swtpm down (TPM2_Shutdown first) and
// removes their state.
func (f *tpmFleet) stop() {
	var wg sync.WaitGroup
	for _, d := range f.devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d.tp != nil {
				d.tp.Close()
			}
			if err := d.inst.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "load:", err)
			}
		}()
	}
	wg.Wait()
	if f.state != "" {
		os.RemoveAll(f.state)
	}
	f.cancel()
}

// configureTPMRoots makes swtpm's local CA the CA's TPM manufacturer: its
// root and issuing certificate, copied into the CA directory, become
// tpm.ek_roots and tpm.ek_intermediates of ca.yaml.
func configureTPMRoots(dir string) error {
	roots, err := swtpmtest.RootsPEM()
	if err != nil {
		return err
	}
	inters, err := swtpmtest.IntermediatesPEM()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tpm-ek-root.pem"), roots, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tpm-ek-intermediate.pem"), inters, 0o600); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "ca.yaml")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	if strings.Contains("\n"+string(b), "\ntpm:") {
		return errors.New("ca.yaml written by 'ca init' already has a tpm section: update the load tool")
	}
	b = append(b, "tpm:\n    ek_roots: [tpm-ek-root.pem]\n    ek_intermediates: [tpm-ek-intermediate.pem]\n"...)
	return os.WriteFile(cfgPath, b, 0o600)
}

// prepare opens every TPM, runs Claim twice per device (timed, outside the
// measurement) and returns what sends one enrollment: any free device
// enrolls once.
func (f *tpmFleet) prepare(base string, pool *x509.CertPool) (func(int) error, error) {
	cl, err := client.New(base, client.WithRoots(pool), client.WithNewConnectionPerRequest())
	if err != nil {
		return nil, err
	}
	f.cl = cl
	fmt.Fprintf(os.Stderr, "opening %d TPMs, creating their AKs ...\n", len(f.devs))
	errs := make([]error, len(f.devs))
	var wg sync.WaitGroup
	for k, d := range f.devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = f.open(d)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	f.free = make(chan *tpmDevice, len(f.devs))
	for _, d := range f.devs {
		f.free <- d
	}
	return func(int) error {
		var d *tpmDevice
		select {
		case d = <-f.free:
		case <-f.ctx.Done():
			return f.ctx.Err()
		}
		defer func() { f.free <- d }()
		return f.enroll(d)
	}, nil
}

func (f *tpmFleet) open(d *tpmDevice) error {
	tp, err := tpm.Open(f.ctx, d.inst.Spec(), tpm.Options{StateDir: filepath.Join(f.state, fmt.Sprint(d.i)), DisableDownload: true})
	if err != nil {
		return err
	}
	d.tp = tp
	t0 := time.Now()
	if _, err := tpmenroll.Claim(f.ctx, tp, tpmAK, d.serial, d.macs); err != nil {
		return fmt.Errorf("device %d: claim: %w", d.i, err)
	}
	t1 := time.Now()
	if d.claim, err = tpmenroll.Claim(f.ctx, tp, tpmAK, d.serial, d.macs); err != nil {
		return fmt.Errorf("device %d: claim: %w", d.i, err)
	}
	t2 := time.Now()
	f.mu.Lock()
	f.claimFirst = append(f.claimFirst, t1.Sub(t0))
	f.claimAgain = append(f.claimAgain, t2.Sub(t1))
	f.mu.Unlock()
	return nil
}

// enroll runs one attestation enrollment of device d and records its times.
func (f *tpmFleet) enroll(d *tpmDevice) error {
	ctx, cancel := context.WithTimeout(f.ctx, tpmReqTimeout)
	defer cancel()
	keyName := fmt.Sprintf("k%d", d.seq)
	d.seq++
	t0 := time.Now()
	ch, err := f.cl.TPMChallenge(ctx, d.claim)
	if err != nil {
		return fmt.Errorf("device %d: challenge: %w", d.i, err)
	}
	t1 := time.Now()
	ans, err := tpmenroll.Answer(ctx, d.tp, tpmAK, keyName, ch, d.serial, d.macs)
	if err != nil {
		return fmt.Errorf("device %d: answer: %w", d.i, err)
	}
	t2 := time.Now()
	resp, err := f.cl.TPMEnroll(ctx, ans.Request)
	if err != nil {
		return fmt.Errorf("device %d: enroll: %w", d.i, err)
	}
	t3 := time.Now()
	if err := d.tp.DeleteKey(ctx, keyName); err != nil {
		return fmt.Errorf("device %d: %w", d.i, err)
	}
	t4 := time.Now()
	if err := d.checkID(resp); err != nil {
		return err
	}
	f.mu.Lock()
	f.challenge = append(f.challenge, t1.Sub(t0))
	f.answer = append(f.answer, t2.Sub(t1))
	f.enrollD = append(f.enrollD, t3.Sub(t2))
	f.deleteKey = append(f.deleteKey, t4.Sub(t3))
	f.mu.Unlock()
	return nil
}

// checkID checks that every enrollment of d keeps its device id.
func (d *tpmDevice) checkID(resp *wire.EnrollResponse) error {
	if d.deviceID == "" {
		d.deviceID = resp.DeviceID
	} else if resp.DeviceID != d.deviceID {
		return fmt.Errorf("device %d: re-enrollment got device id %q, first %q", d.i, resp.DeviceID, d.deviceID)
	}
	return nil
}

// resetTimes forgets the per-enrollment times (after the warm-up).
func (f *tpmFleet) resetTimes() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.challenge, f.answer, f.enrollD, f.deleteKey = nil, nil, nil, nil
}

// swtpmCPU is the CPU time of every swtpm process so far.
func (f *tpmFleet) swtpmCPU() time.Duration {
	var sum time.Duration
	for _, d := range f.devs {
		c, _ := procCPU(d.inst.Pid())
		sum += c
	}
	return sum
}

// figures fills the TPM figures of the measured run; swtpmCPU is the swtpm
// CPU time of that run.
func (f *tpmFleet) figures(ok int64, swtpmCPU time.Duration) *tpmFigures {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := &tpmFigures{
		Devices:        len(f.devs),
		ClaimFirstMs:   mean(f.claimFirst),
		ClaimAgainMs:   mean(f.claimAgain),
		ChallengeRTTms: mean(f.challenge),
		AnswerMs:       mean(f.answer),
		EnrollRTTms:    mean(f.enrollD),
		DeleteKeyMs:    mean(f.deleteKey),
	}
	if ok > 0 {
		r.SWTPMCPUms = ms(swtpmCPU) / float64(ok)
	}
	return r
}

// breakdown enrolls device 0 n times, alone and one at a time, timing each
// TPM step of tpmenroll.Answer separately (the same calls in the same order).
func (f *tpmFleet) breakdown(n int) (tpmBreakdown, error) {
	d := f.devs[0]
	var act, key, csr, chRTT, enRTT, whole time.Duration
	cpu0, _ := procCPU(d.inst.Pid())
	for range n {
		ctx, cancel := context.WithTimeout(f.ctx, tpmReqTimeout)
		err := func() error {
			keyName := fmt.Sprintf("k%d", d.seq)
			d.seq++
			t0 := time.Now()
			ch, err := f.cl.TPMChallenge(ctx, d.claim)
			if err != nil {
				return err
			}
			t1 := time.Now()
			ak, err := d.tp.EnsureAK(ctx, tpmAK)
			if err != nil {
				return err
			}
			secret, err := ak.ActivateCredential(ctx, attestCredential(ch))
			if err != nil {
				return err
			}
			t2 := time.Now()
			k, err := d.tp.AttestedKey(ctx, tpmAK, keyName, ch.Nonce)
			if err != nil {
				return err
			}
			cp, err := k.CertificationParameters(ctx)
			if err != nil {
				return err
			}
			t3 := time.Now()
			signer, err := k.Signer(ctx)
			if err != nil {
				return err
			}
			der, err := pki.NewDeviceCSR(signer, d.serial, d.macs)
			if err != nil {
				return err
			}
			t4 := time.Now()
			resp, err := f.cl.TPMEnroll(ctx, enrollRequest(ch, secret, cp, der))
			if err != nil {
				return err
			}
			t5 := time.Now()
			if err := d.tp.DeleteKey(ctx, keyName); err != nil {
				return err
			}
			if err := d.checkID(resp); err != nil {
				return err
			}
			chRTT += t1.Sub(t0)
			act += t2.Sub(t1)
			key += t3.Sub(t2)
			csr += t4.Sub(t3)
			enRTT += t5.Sub(t4)
			whole += t5.Sub(t0)
			return nil
		}()
		cancel()
		if err != nil {
			return tpmBreakdown{}, fmt.Errorf("breakdown, device 0: %w", err)
		}
	}
	cpu1, _ := procCPU(d.inst.Pid())
	per := func(d time.Duration) float64 { return ms(d) / float64(n) }
	b := tpmBreakdown{
		N:          n,
		ActivateMs: per(act), AttestedKeyMs: per(key), CSRSignMs: per(csr),
		AnswerMs:       per(act + key + csr),
		ChallengeRTTms: per(chRTT), EnrollRTTms: per(enRTT),
		SWTPMCPUms:   per(cpu1 - cpu0),
		EnrollmentMs: per(whole),
	}
	if b.EnrollmentMs > 0 {
		b.PerSecondDevice = 1000 / b.EnrollmentMs
	}
	return b, nil
}

// attestCredential and enrollRequest are what tpmenroll.Answer sends.
func attestCredential(ch *wire.TPMChallengeResponse) attest.EncryptedCredential {
	return attest.EncryptedCredential{Credential: ch.Credential, Secret: ch.Secret}
}

func enrollRequest(ch *wire.TPMChallengeResponse, secret []byte, cp attest.CertificationParameters, csrDER []byte) *wire.TPMEnrollRequest {
	return &wire.TPMEnrollRequest{
		ChallengeID:     ch.ChallengeID,
		ActivatedSecret: secret,
		Certify: wire.TPMCertificationParameters{
			Public: cp.Public, CreateData: cp.CreateData,
			CreateAttestation: cp.CreateAttestation, CreateSignature: cp.CreateSignature,
		},
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
	}
}

// printTPM prints the TPM figures after the general ones.
func printTPM(r *tpmFigures) {
	fmt.Printf("TPM, per device once (not measured): Claim with AK creation %.1f ms, Claim again %.2f ms\n", r.ClaimFirstMs, r.ClaimAgainMs)
	fmt.Printf("per enrollment, mean under load (%d devices):\n", r.Devices)
	fmt.Printf("  HTTP challenge round trip:  %7.2f ms  (new TLS connection; CA verifies EK chain and AK, makes the credential)\n", r.ChallengeRTTms)
	fmt.Printf("  device TPM work (Answer):   %7.2f ms  (ActivateCredential + attested key + TPM2_Certify + CSR signed in the TPM)\n", r.AnswerMs)
	fmt.Printf("  HTTP enroll round trip:     %7.2f ms  (new TLS connection; CA checks activation, certification, CSR; issues, records)\n", r.EnrollRTTms)
	fmt.Printf("  delete key blob:            %7.2f ms\n", r.DeleteKeyMs)
	fmt.Printf("  swtpm CPU per enrollment:   %7.2f ms  (all swtpm processes: the TPM's own cost)\n", r.SWTPMCPUms)
	b := r.Breakdown
	if b.N == 0 {
		return
	}
	fmt.Printf("device 0 alone, %d enrollments one at a time: %.2f ms each (%.0f/s)\n", b.N, b.EnrollmentMs, b.PerSecondDevice)
	fmt.Printf("  TPM: ActivateCredential %.2f ms + attested key %.2f ms + CSR sign %.2f ms = %.2f ms; swtpm CPU %.2f ms\n",
		b.ActivateMs, b.AttestedKeyMs, b.CSRSignMs, b.AnswerMs, b.SWTPMCPUms)
	fmt.Printf("  HTTP: challenge %.2f ms, enroll %.2f ms\n", b.ChallengeRTTms, b.EnrollRTTms)
}

func mean(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return ms(sum) / float64(len(ds))
}
