package sqlstore

import (
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"gorm.io/gorm/schema"
)

// TestReadsMatchModels: the prepared lookups of reads.go read every column
// of their model, in the order scanDest scans them, so a column added to a
// model (and its migration) cannot be silently left out of GetCertificate
// or GetDevice.
func TestReadsMatchModels(t *testing.T) {
	cases := []struct {
		query string
		model any
		dest  int
	}{
		{sqlGetCertificate, &certificateRow{}, len((&certificateRow{}).scanDest())},
		{sqlGetDevice, &deviceRow{}, len((&deviceRow{}).scanDest())},
	}
	cols := regexp.MustCompile(`^SELECT (.*) FROM `)
	for _, c := range cases {
		sch, err := schema.Parse(c.model, &sync.Map{}, schema.NamingStrategy{})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, f := range sch.Fields {
			if f.DBName != "" {
				want = append(want, f.DBName)
			}
		}
		m := cols.FindStringSubmatch(c.query)
		if m == nil {
			t.Fatalf("cannot read the columns of %q", c.query)
		}
		got := strings.Split(m[1], ", ")
		if len(got) != c.dest {
			t.Errorf("%s: %d columns selected, %d scanned", sch.Table, len(got), c.dest)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: the lookup reads %v, the model has %v", sch.Table, got, want)
		}
	}
}

// The joined lookup reads exactly GetCertificate's columns then
// GetDevice's, in their order (it scans into the same destinations).
func TestJoinedReadMatchesLookups(t *testing.T) {
	cols := regexp.MustCompile(`^SELECT (.*?) FROM `)
	list := func(q string) []string {
		m := cols.FindStringSubmatch(q)
		if m == nil {
			t.Fatalf("cannot read the columns of %q", q)
		}
		return strings.Split(m[1], ", ")
	}
	var want []string
	for _, c := range list(sqlGetCertificate) {
		want = append(want, "c."+c)
	}
	for _, c := range list(sqlGetDevice) {
		want = append(want, "d."+c)
	}
	if got := list(sqlGetCertificateAndDevice); !slices.Equal(got, want) {
		t.Errorf("joined lookup reads\n%v\nwant\n%v", got, want)
	}
}
