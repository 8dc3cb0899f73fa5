// Command refworker is the reference rbee worker: it speaks the worker
// protocol of DESIGN.md and misbehaves on request (see package
// monitor/workertest for its knobs). Use it as worker.command to try a hive
// without a GPU or an inference engine.
package main

import "github.com/rbee-hive/rbee-hive/monitor/workertest"

func main() { workertest.Main() }
