//go:build !poolbench_pprof

package main

import "errors"

// servePprof is a stub: net/http/pprof is left out of the default build so
// that the scale measurement's RSS (which counts the binary's mapped text)
// is not inflated by it. Build with -tags poolbench_pprof to profile.
func servePprof(string) error {
	return errors.New("-pprof: poolbench was built without -tags poolbench_pprof")
}
