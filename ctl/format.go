package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// printJSON prints a body as received (--json), ending it with a newline.
func printJSON(w io.Writer, body []byte) {
	w.Write(bytes.TrimRight(body, "\n"))
	fmt.Fprintln(w)
}

// printKV prints a JSON object as aligned `key: value` lines in the server's
// field order, nested objects and arrays flattened (`last_drain.forced`,
// `devices[0].uuid`), so new fields show up without a client change.
func printKV(w io.Writer, body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if err := flatten(dec, "", tw); err != nil {
		return fmt.Errorf("decoding answer: %w", err)
	}
	return tw.Flush()
}

// flatten reads one JSON value from dec and prints its leaves under prefix.
func flatten(dec *json.Decoder, prefix string, w io.Writer) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		n := 0
		for ; dec.More(); n++ {
			key, err := dec.Token()
			if err != nil {
				return err
			}
			name := key.(string)
			if prefix != "" {
				name = prefix + "." + name
			}
			if err := flatten(dec, name, w); err != nil {
				return err
			}
		}
		if n == 0 && prefix != "" {
			fmt.Fprintf(w, "%s:\t{}\n", prefix)
		}
		_, err = dec.Token()
		return err
	case json.Delim('['):
		n := 0
		for ; dec.More(); n++ {
			if err := flatten(dec, fmt.Sprintf("%s[%d]", prefix, n), w); err != nil {
				return err
			}
		}
		if n == 0 {
			fmt.Fprintf(w, "%s:\t[]\n", prefix)
		}
		_, err = dec.Token()
		return err
	}
	fmt.Fprintf(w, "%s:\t%s\n", prefix, leaf(prefix, tok))
	return nil
}

// leaf renders one scalar; epoch-millisecond timestamps get a readable time.
func leaf(key string, v any) string {
	switch v := v.(type) {
	case nil:
		return "-"
	case string:
		return v
	case json.Number:
		if isTimestamp(key) {
			if ms, err := v.Int64(); err == nil && ms > 0 {
				return fmt.Sprintf("%s (%s)", v, fmtTime(ms))
			}
		}
		return v.String()
	}
	return fmt.Sprint(v)
}

func isTimestamp(key string) bool {
	key = key[strings.LastIndex(key, ".")+1:]
	return strings.HasSuffix(key, "_at_ms") || strings.HasSuffix(key, "_since_ms") ||
		key == "last_heartbeat_ms" || key == "at_ms"
}

// fmtTime renders epoch milliseconds in local time, to the millisecond.
func fmtTime(ms int64) string {
	return time.UnixMilli(ms).Format("2006-01-02 15:04:05.000")
}

// truncate shortens s to n runes for a table cell.
func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ") // one line per row
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fmtUptime is a compact duration for a table cell: 45s, 12m30s, 5h3m, 2d4h.
func fmtUptime(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
