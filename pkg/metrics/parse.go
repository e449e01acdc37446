package metrics

import (
	"fmt"
	"io"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are parsed metric families by name (Parse).
type Families map[string]*dto.MetricFamily

// Parse reads a scrape in the Prometheus text format with the client
// library's own parser.
func Parse(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	f, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("metrics: parse the text format: %w", err)
	}
	return Families(f), nil
}

// Value is the value of the counter or gauge series name whose labels
// include labels (name, value pairs); for a histogram, its sample count.
// ok is false when there is no such series.
func (fs Families) Value(name string, labels ...string) (v float64, ok bool) {
	f := fs[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
					break
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.GetUntyped() != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// Count is Value with a missing series read as 0 (a counter not yet
// incremented).
func (fs Families) Count(name string, labels ...string) float64 {
	v, _ := fs.Value(name, labels...)
	return v
}
