package metrics_test

import (
	"testing"
	"time"

	"devpki/pkg/metrics"
)

// BenchmarkEnrollmentHooks is what the metrics add to one enrollment on
// the server: the pipeline's outcome and the commit of its transaction
// (a transaction per enrollment, the worst case: under load the committer
// groups them), from every core at once.
//
//	go test -run '^$' -bench EnrollmentHooks -benchtime 2000000x ./pkg/metrics
func BenchmarkEnrollmentHooks(b *testing.B) {
	m := metrics.New(metrics.Options{})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Enrollment("token", "ok")
			m.Committed(1, 300*time.Microsecond)
		}
	})
}
