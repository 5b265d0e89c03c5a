package proc

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

// A command name holding ") (" and a trailing ") " ends at the LAST ')'.
func TestParseStatHostileComm(t *testing.T) {
	line := "4242 (a) (b c) ) d) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 1 0 987654321 1000 25600 " +
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n"
	st, err := ParseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{State: 'S', PPID: 1, PGrp: 4242, UTime: 150, STime: 50, StartTime: 987654321, RSSPages: 25600}
	if st != want {
		t.Fatalf("ParseStat = %+v, want %+v", st, want)
	}
	if st.CPU() != 2*time.Second {
		t.Fatalf("CPU = %s, want 2s", st.CPU())
	}
}

func TestParseStatRejectsMalformed(t *testing.T) {
	for _, bad := range []string{
		"", "garbage", "4242 sleep S 1", "4242 (sleep) S 1 2 3",
		"4242 (x) S 1 x 3 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12",                  // short, and pgrp is no number
		"4242 (x) S 1 x 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12 0 25600",       // pgrp is no number
		"4242 (x) SS 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12 0 25600",   // state is not one letter
		"4242 x) S 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12 0 25600 0 0", // no '('
	} {
		if st, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q) = %+v, accepted", bad, st)
		}
	}
}

func TestReadStatOfSelf(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.State == 'Z' || st.StartTime == 0 || st.RSSPages == 0 || st.PPID != os.Getppid() {
		t.Fatalf("ReadStat(self) = %+v; want alive, started, resident, parent %d", st, os.Getppid())
	}
	if _, err := ReadStat(1 << 30); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadStat(no such pid) = %v, want ErrNotExist", err)
	}
}

// A StatFile reads the process anew each time (its CPU time moves on), and
// once the process is reaped it fails instead of reading whatever process
// gets the pid next.
func TestStatFileRereadsAndStaysBound(t *testing.T) {
	self, err := OpenStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	first, err := self.Read()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for x := 0; x < 1e7; x++ { // burn CPU until a clock tick shows
			_ = x * x
		}
		st, err := self.Read()
		if err != nil {
			t.Fatal(err)
		}
		if st.CPU() > first.CPU() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stayed %s over 30 s of spinning", first.CPU())
		}
	}

	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f, err := OpenStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, err := f.Read(); err != nil || st.State == 'Z' || st.PPID != os.Getpid() {
		t.Fatalf("child stat = %+v, %v", st, err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if st, err := f.Read(); err == nil {
		t.Fatalf("stat of a reaped process read %+v", st)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(); err == nil {
		t.Fatal("Read after Close succeeded")
	}
	var none *StatFile
	if _, err := none.Read(); err == nil || none.Close() != nil {
		t.Fatal("nil StatFile")
	}
}

// Parsing a stat line allocates nothing (liveness parses one per probe).
func TestParseStatAllocatesNothing(t *testing.T) {
	line := []byte("4242 (llama-server) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 1 0 987654321 1000 25600 " +
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n")
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseStat(line) }); n != 0 {
		t.Fatalf("ParseStat allocates %v times per call", n)
	}
}
