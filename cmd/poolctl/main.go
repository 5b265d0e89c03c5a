// Command poolctl is the operator CLI of pool-managerd (see package ctl);
// `pool-managerd ctl` runs the same code.
package main

import (
	"os"

	"github.com/pool-managerd/pool-managerd/ctl"
)

func main() { os.Exit(ctl.Main(os.Args[1:], os.Stdout, os.Stderr)) }
