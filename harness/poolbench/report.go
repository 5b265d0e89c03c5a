// This file holds what poolbench prints: result rows with their baseline and
// target, the machine description, and the table and JSON renderings.

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// target is a pass/fail line for a row: the value (or the value/baseline
// ratio) must be at most (or at least) limit.
type target struct {
	OnRatio bool    `json:"on_ratio"`
	AtLeast bool    `json:"at_least"`
	Limit   float64 `json:"limit"`
}

// row is one figure of the report, in the unit it is printed in.
type row struct {
	Section  string   `json:"section"`
	Metric   string   `json:"metric"`
	Value    float64  `json:"value"`
	Unit     string   `json:"unit"`
	Baseline *float64 `json:"baseline"` // same unit as Value; nil: none
	BaseName string   `json:"baseline_name,omitempty"`
	Ratio    *float64 `json:"ratio"` // Value / Baseline
	Target   *target  `json:"target"`
	OK       *bool    `json:"ok"` // nil: no target
	Err      string   `json:"error,omitempty"`
}

// newRow builds a row; baseline < 0 means "no baseline".
func newRow(section, metric string, value float64, unit string, baseline float64, baseName string, t *target) row {
	r := row{Section: section, Metric: metric, Value: value, Unit: unit, Target: t}
	if baseline >= 0 {
		r.Baseline, r.BaseName = &baseline, baseName
		if baseline > 0 {
			ratio := value / baseline
			r.Ratio = &ratio
		}
	}
	if t != nil {
		v := value
		if t.OnRatio {
			if r.Ratio == nil {
				return r
			}
			v = *r.Ratio
		}
		ok := v <= t.Limit
		if t.AtLeast {
			ok = v >= t.Limit
		}
		r.OK = &ok
	}
	return r
}

func atMost(limit float64) *target       { return &target{Limit: limit} }
func ratioAtMost(limit float64) *target  { return &target{OnRatio: true, Limit: limit} }
func ratioAtLeast(limit float64) *target { return &target{OnRatio: true, AtLeast: true, Limit: limit} }

func errRow(section string, err error) row {
	return row{Section: section, Metric: section + " failed", Err: err.Error()}
}

// machine describes where the numbers were taken.
type machine struct {
	NProc    int    `json:"nproc"`
	CPU      string `json:"cpu"`
	Go       string `json:"go"`
	Kernel   string `json:"kernel"`
	LoadAvg  string `json:"loadavg_at_start"`
	Date     string `json:"date"`
	Command  string `json:"command"`
	Duration string `json:"duration,omitempty"`
}

func describeMachine() machine {
	m := machine{NProc: runtime.NumCPU(), CPU: "unknown", Go: runtime.Version(),
		Date: time.Now().UTC().Format(time.RFC3339), Command: "poolbench " + strings.Join(os.Args[1:], " ")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

// printTable writes the human-readable report.
func printTable(w io.Writer, m machine, rows []row) {
	fmt.Fprintf(w, "machine: %d CPUs, %s, kernel %s, %s, load avg at start %s\n", m.NProc, m.CPU, m.Kernel, m.Go, m.LoadAvg)
	fmt.Fprintf(w, "date: %s   command: %s   took: %s\n\n", m.Date, m.Command, m.Duration)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "metric\t value\t baseline\t ratio\t target\t ok?")
	section := ""
	for _, r := range rows {
		if r.Section != section {
			section = r.Section
			fmt.Fprintf(tw, "[%s]\t\t\t\t\t\n", section)
		}
		if r.Err != "" {
			fmt.Fprintf(tw, "  %s\t ERROR: %s\t\t\t\t FAIL\n", r.Metric, r.Err)
			continue
		}
		base, ratio, tgt, ok := "—", "—", "—", "—"
		if r.Baseline != nil {
			base = num(*r.Baseline, r.Unit) + " (" + r.BaseName + ")"
		}
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f×", *r.Ratio)
		}
		if t := r.Target; t != nil {
			op := "≤"
			if t.AtLeast {
				op = "≥"
			}
			if t.OnRatio {
				tgt = fmt.Sprintf("%s %g× baseline", op, t.Limit)
			} else {
				tgt = op + " " + num(t.Limit, r.Unit)
			}
		}
		if r.OK != nil {
			ok = map[bool]string{true: "yes", false: "NO"}[*r.OK]
		}
		fmt.Fprintf(tw, "  %s\t %s\t %s\t %s\t %s\t %s\n", r.Metric, num(r.Value, r.Unit), base, ratio, tgt, ok)
	}
	_ = tw.Flush()
	met, total := 0, 0
	for _, r := range rows {
		if r.OK != nil {
			total++
			if *r.OK {
				met++
			}
		}
	}
	fmt.Fprintf(w, "\n%d of %d targets met\n", met, total)
}

func num(v float64, unit string) string {
	switch {
	case v != 0 && v < 0.1 && v > -0.1:
		return fmt.Sprintf("%.3f %s", v, unit)
	case v < 10 && v > -10:
		return fmt.Sprintf("%.2f %s", v, unit)
	case v < 1000 && v > -1000:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}

func printJSON(w io.Writer, m machine, rows []row) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"machine": m, "results": rows})
}

// ---- statistics ----

// dist is a set of latency samples.
type dist []time.Duration

// pct is the nearest-rank percentile p (0 < p <= 100); 0 for no samples.
func (d dist) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func (d dist) max() time.Duration { return d.pct(100) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// latencyRows reports p50, p99 and max of d against base (nil: no baseline).
func latencyRows(section, what string, d, base dist, baseName string, t50, t99 *target) []row {
	b := func(p float64) float64 {
		if base == nil {
			return -1
		}
		return ms(base.pct(p))
	}
	return []row{
		newRow(section, what+" p50", ms(d.pct(50)), "ms", b(50), baseName, t50),
		newRow(section, what+" p99", ms(d.pct(99)), "ms", b(99), baseName, t99),
		newRow(section, what+" max", ms(d.max()), "ms", b(100), baseName, nil),
	}
}
