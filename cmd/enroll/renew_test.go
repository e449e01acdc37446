package main

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"devpki/pkg/tpm/swtpmtest"
)

// enrolled returns a harness whose state directory holds an identity.
func enrolled(t *testing.T) (*fakeCA, *harness) {
	t.Helper()
	f := newFakeCA(t)
	h := newHarness(t, f)
	if err := h.run(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, h.stderr.String())
	}
	return f, h
}

func (h *harness) load(t *testing.T) *identity {
	t.Helper()
	id, err := loadIdentity(context.Background(), newKeyring(h.cfg.Dir, ""), h.cfg.Fingerprint, h.cfg.Now())
	if err != nil {
		t.Fatalf("current identity: %v", err)
	}
	return id
}

func sameKey(a, b crypto.Signer) bool {
	return a.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(b.Public())
}

func TestRenewSameKey(t *testing.T) {
	f, h := enrolled(t)
	before := h.load(t)
	a := &agentFlags{cfg: h.cfg}
	if err := runRenewCmd(context.Background(), a, nil); err != nil {
		t.Fatalf("renew: %v\n%s", err, h.stderr.String())
	}
	after := h.load(t)
	if after.Cert.SerialNumber.Cmp(before.Cert.SerialNumber) == 0 {
		t.Fatal("certificate not replaced")
	}
	if !sameKey(before.Key, after.Key) {
		t.Fatal("same-key renewal changed the key")
	}
	if f.RenewHits.Load() != 1 {
		t.Fatalf("%d renew requests", f.RenewHits.Load())
	}
	if after.Cert.Subject.String() != before.Cert.Subject.String() {
		t.Fatalf("subject changed: %s -> %s", before.Cert.Subject, after.Cert.Subject)
	}
	// The previous pair is kept beside the new one.
	prev, err := loadGeneration(context.Background(), newKeyring(h.cfg.Dir, ""), candidates[len(candidates)-1], h.cfg.Fingerprint, h.cfg.Now())
	if err != nil || prev.Cert.SerialNumber.Cmp(before.Cert.SerialNumber) != 0 {
		t.Fatalf("previous pair not kept: %v", err)
	}
}

func TestRenewRekeyWhenRequired(t *testing.T) {
	f, h := enrolled(t)
	before := h.load(t)
	f.RekeyNeeded.Store(true)
	if err := runRenewCmd(context.Background(), &agentFlags{cfg: h.cfg}, nil); err != nil {
		t.Fatalf("renew: %v\n%s", err, h.stderr.String())
	}
	after := h.load(t)
	if sameKey(before.Key, after.Key) {
		t.Fatal("the CA required a re-key but the key is unchanged")
	}
	if f.RenewHits.Load() != 2 {
		t.Fatalf("%d renew requests, want 2 (refused, then re-keyed)", f.RenewHits.Load())
	}
	if !strings.Contains(h.stderr.String(), "requires a new key") {
		t.Fatalf("no log line for the re-key:\n%s", h.stderr.String())
	}
}

func TestRenewRefusedIsPermanent(t *testing.T) {
	f, h := enrolled(t)
	before := h.load(t)
	f.Then(problem(403, "revoked", "device revoked"))
	err := runRenewCmd(context.Background(), &agentFlags{cfg: h.cfg}, nil)
	if err == nil || exitCode(err) != exitFailure || !strings.Contains(err.Error(), "device revoked") {
		t.Fatalf("err %v (exit %d), want the CA's refusal, exit 1", err, exitCode(err))
	}
	if h.load(t).Cert.SerialNumber.Cmp(before.Cert.SerialNumber) != 0 {
		t.Fatal("a refused renewal changed the identity")
	}
}

func TestRenewWithoutIdentity(t *testing.T) {
	f := newFakeCA(t)
	h := newHarness(t, f)
	a := &agentFlags{cfg: h.cfg, fingerprint: f.Fingerprint()}
	a.cfg.CA = f.Srv.URL
	err := runRenewCmd(context.Background(), a, nil)
	if err == nil || !strings.Contains(err.Error(), "enroll first") {
		t.Fatalf("err %v, want 'enroll first'", err)
	}
}

// TestRenewCrashAtEveryStep stops replaceIdentity after each of its steps, as
// a power cut would, and checks that the state directory still yields a valid
// identity — the old one or the new one — and that the next renewal works.
func TestRenewCrashAtEveryStep(t *testing.T) {
	for _, step := range []string{stepPrevWritten, stepNextWritten, stepChainMoved, stepKeyMoved, stepCertMoved} {
		for _, rekey := range []bool{false, true} {
			name := step
			if rekey {
				name += "/rekey"
			}
			t.Run(name, func(t *testing.T) {
				_, h := enrolled(t)
				crash := errors.New("simulated crash")
				a := &agentFlags{cfg: h.cfg, rekey: rekey}
				err := runRenewCmd(context.Background(), a, func(s string) error {
					if s == step {
						return crash
					}
					return nil
				})
				if !errors.Is(err, crash) {
					t.Fatalf("renew: %v, want the simulated crash", err)
				}
				id, err := recoverIdentity(context.Background(), newKeyring(h.cfg.Dir, ""), h.cfg.Fingerprint, h.cfg.Now(), t.Logf)
				if err != nil {
					t.Fatalf("no usable identity after a crash at %s: %v", step, err)
				}
				if err := verifyIdentity(id, h.cfg.Now()); err != nil {
					t.Fatal(err)
				}
				// recoverIdentity left the current files valid.
				cur := h.load(t)
				if cur.Cert.SerialNumber.Cmp(id.Cert.SerialNumber) != 0 {
					t.Fatal("current files differ from the recovered identity")
				}
				if err := runRenewCmd(context.Background(), &agentFlags{cfg: h.cfg}, nil); err != nil {
					t.Fatalf("renewal after the crash: %v", err)
				}
				h.load(t)
			})
		}
	}
}

// TestRenewSIGKILLAtEveryStep runs the real binary and has it SIGKILL itself
// at each step of a re-key (DEVPKI_FAILPOINT), then checks the state.
func TestRenewSIGKILLAtEveryStep(t *testing.T) {
	testRenewSIGKILL(t, "none")
}

// TestRenewSIGKILLAtEveryStepTPM is the same with the key in swtpm: each
// re-key makes a new TPM key, and every generation's reference must still
// load after the kill.
func TestRenewSIGKILLAtEveryStepTPM(t *testing.T) {
	testRenewSIGKILL(t, swtpmtest.Start(t).Spec())
}

func testRenewSIGKILL(t *testing.T, tpmSpec string) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "enroll")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, step := range []string{stepPrevWritten, stepNextWritten, stepChainMoved, stepKeyMoved, stepCertMoved} {
		t.Run(step, func(t *testing.T) {
			f := newFakeCA(t)
			dir := filepath.Join(t.TempDir(), "state")
			enroll := exec.Command(bin, "--ca", f.Srv.URL, "--fingerprint", f.Fingerprint(), "--token", testToken,
				"--dir", dir, "--serial", "SN-KILL", "--mac", "02:00:00:00:00:0a", "--tpm", tpmSpec)
			if out, err := enroll.CombinedOutput(); err != nil {
				t.Fatalf("enroll: %v\n%s", err, out)
			}
			var stderr bytes.Buffer
			rk := exec.Command(bin, "rekey", "--dir", dir)
			rk.Env = append(os.Environ(), "DEVPKI_FAILPOINT="+step)
			rk.Stderr = &stderr
			err := rk.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("rekey was not killed at %s: %v\n%s", step, err, stderr.String())
			}
			st := exec.Command(bin, "status", "--dir", dir)
			out, err := st.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "serial:      SN-KILL") {
				t.Fatalf("status after SIGKILL at %s: %v\n%s", step, err, out)
			}
			if wantTPM := tpmSpec != "none"; wantTPM != strings.Contains(string(out), "key:         TPM (") {
				t.Fatalf("status after SIGKILL at %s: want a TPM key %v:\n%s", step, wantTPM, out)
			}
			if out, err := exec.Command(bin, "renew", "--dir", dir).CombinedOutput(); err != nil {
				t.Fatalf("renew after SIGKILL at %s: %v\n%s", step, err, out)
			}
		})
	}
}

func TestRenewAtTwoThirds(t *testing.T) {
	_, h := enrolled(t)
	c := h.load(t).Cert
	life := c.NotAfter.Sub(c.NotBefore)
	at := renewAt(c, func(time.Duration) time.Duration { return 0 })
	if d := at.Sub(c.NotBefore); d != life*2/3 {
		t.Fatalf("renewal at %s into the lifetime, want %s", d, life*2/3)
	}
	early := renewAt(c, func(max time.Duration) time.Duration { return max - 1 })
	if at.Sub(early) >= life/20 || !early.Before(at) {
		t.Fatalf("jitter moved the renewal by %s, want (0, %s)", at.Sub(early), life/20)
	}
}

// TestAgentRunLoop drives 'enroll run' on a fake clock: it enrolls an empty
// state, renews at two thirds of each lifetime, rides out a CA outage, and
// re-keys when the CA asks.
func TestAgentRunLoop(t *testing.T) {
	f := newFakeCA(t)
	h := newHarness(t, f)
	f.UseClock(t, h.cfg.Now)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var renewals []time.Time
	sleep := h.cfg.Sleep
	h.cfg.Sleep = func(ctx context.Context, d time.Duration) error {
		if n := int(f.RenewHits.Load()); n >= 8 {
			cancel()
			return ctx.Err()
		}
		return sleep(ctx, d)
	}
	// Renewal 2 meets an outage (two 503s); renewal 3 is told to re-key.
	script := map[int32]func(){
		2: func() {
			f.Then(problem(503, "unavailable", "maintenance", "Retry-After", "30"), problem(503, "unavailable", "maintenance"))
		},
		3: func() { f.RekeyNeeded.Store(true) },
	}
	a := &agentFlags{cfg: h.cfg, fingerprint: f.Fingerprint()}
	done := make(chan error, 1)
	go func() {
		done <- runAgent(ctx, a, func(step string) error {
			if step == stepCertMoved {
				renewals = append(renewals, h.cfg.Now())
				if s, ok := script[int32(len(renewals))]; ok {
					s()
				}
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, h.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not stop")
	}
	if f.EnrollHits.Load() != 1 {
		t.Fatalf("%d enrollments, want 1", f.EnrollHits.Load())
	}
	if len(renewals) < 3 {
		t.Fatalf("%d renewals installed, want at least 3\n%s", len(renewals), h.stderr.String())
	}
	log := h.stderr.String()
	for _, want := range []string{"no identity", "next renewal at", "next try in 30s", "requires a new key", "renewed"} {
		if !strings.Contains(log, want) {
			t.Errorf("agent log lacks %q:\n%s", want, log)
		}
	}
	id := h.load(t)
	life := id.Cert.NotAfter.Sub(id.Cert.NotBefore)
	for i := 1; i < len(renewals); i++ {
		if gap := renewals[i].Sub(renewals[i-1]); gap < life/2 || gap > life*3/4 {
			t.Errorf("renewal %d came %s after the previous one, want about 2/3 of %s", i, gap, life)
		}
	}
}

// TestAgentClockAhead: a device whose clock runs far ahead of the CA's gets
// certificates that are due at once; the agent must not renew in a loop.
func TestAgentClockAhead(t *testing.T) {
	f := newFakeCA(t) // issues on the real clock
	h := newHarness(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sleep := h.cfg.Sleep
	h.cfg.Sleep = func(ctx context.Context, d time.Duration) error {
		if f.RenewHits.Load() >= 4 {
			cancel()
			return ctx.Err()
		}
		return sleep(ctx, d)
	}
	a := &agentFlags{cfg: h.cfg, fingerprint: f.Fingerprint()}
	if err := runAgent(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.stderr.String(), "ahead of the CA's") {
		t.Fatalf("no clock warning:\n%s", h.stderr.String())
	}
	// Between renewals the agent waited at least the minimum gap (an hour).
	long := 0
	for _, d := range h.sleeps {
		if d >= time.Hour {
			long++
		}
	}
	if long < 2 {
		t.Fatalf("sleeps %v: want the renewals spaced by at least an hour", h.sleeps)
	}
}

// TestEnrollReusesKeyAfterLostAnswer: the key is stored before the CSR is
// sent, so a run that fails after sending sends the same key next time.
func TestEnrollReusesKeyAfterLostAnswer(t *testing.T) {
	f := newFakeCA(t)
	h := newHarness(t, f)
	// With a 1s timeout and the harness's jitter (half the ceiling) the first
	// run tries at 0, 0.25s and 0.75s, then gives up.
	f.Then(problem(500, "internal", "the answer was lost"), problem(500, "internal", "the answer was lost"),
		problem(500, "internal", "the answer was lost"))
	h.cfg.Timeout = time.Second
	if err := h.run(); exitCode(err) != exitTimedOut {
		t.Fatalf("first run: %v, want exit %d", err, exitTimedOut)
	}
	h.cfg.Timeout = time.Minute
	if err := h.run(); err != nil {
		t.Fatalf("second run: %v\n%s", err, h.stderr.String())
	}
	if len(f.csrKeys) != 4 || f.csrKeys[0] != f.csrKeys[1] || f.csrKeys[0] != f.csrKeys[2] || f.csrKeys[0] != f.csrKeys[3] {
		t.Fatalf("the requests carried keys %v; want the same key 4 times", f.csrKeys)
	}
	if !strings.Contains(h.stderr.String(), "reusing the key of an unfinished enrollment") {
		t.Fatalf("no log of the reuse:\n%s", h.stderr.String())
	}
	h.load(t)
}
