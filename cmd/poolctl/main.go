// Command poolctl is the operator CLI of pool-managerd (see package ctl);
// `pool-managerd ctl` runs the same code.
package main

import (
	"fmt"
	"os"

	"github.com/pool-managerd/pool-managerd/ctl"
	"github.com/pool-managerd/pool-managerd/internal/buildinfo"
)

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println("poolctl", buildinfo.Get().String("dev"))
		return
	}
	os.Exit(ctl.Main(os.Args[1:], os.Stdout, os.Stderr))
}
