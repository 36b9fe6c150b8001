// insert-transfers: every value used on a device other than the one holding it gets exactly one exec.send (on
// the source) and one exec.recv (on the destination), over the cluster's route, with its bytes and predicted
// seconds; users on that device read the received value. A KV cache moving to a chip whose KV layout differs
// also gets an exec.convert there. A value defined outside a loop and used inside it moves once, before the
// loop; a value the loop carries into its next iteration moves on the back edge where it is written on one
// device and read on another. Needs a cluster and placed-level IR; the graph becomes transfers-level.
// RUN: gimletc opt %s --pipeline insert-transfers --cluster %S/../clusters/h200_mi300x.yaml | filecheck %s
// RUN: not gimletc opt %s --pipeline insert-transfers 2>&1 | filecheck %s --check-prefix=NOCLUSTER

module attributes {gimlet.level = "placed", gimlet.name = "fixer", gimlet.objective = "latency"} {
  %request = "agent.input"() {device = "n.host", devices = ["n.host#0"], seconds = 0.0 : f64, sym_name = "request", tokens = 2000 : i64} : () -> !gimlet.tokens<2000>
  %plan.kv = "model.prefill"(%request) {batch = 4 : i64, ctx = 0 : i64, device = "n.h200.0", devices = ["n.h200.0"], model = "llama-3.1-8b", of = "plan", partition = "phase", seconds = 0.19621251877672743 : f64, sym_name = "plan.prefill", tokens = 2000 : i64, variant = "phase"} : (!gimlet.tokens<2000>) -> !gimlet.kv<1048576000>
  %plan = "model.decode"(%plan.kv) {batch = 4 : i64, ctx = 2000 : i64, device = "a.mi300x.0", devices = ["a.mi300x.0"], model = "llama-3.1-8b", of = "plan", partition = "phase", seconds = 1.8691223807385926 : f64, sym_name = "plan.decode", tokens = 300 : i64, variant = "phase"} : (!gimlet.kv<1048576000>) -> !gimlet.tokens<300>
  %fix.results.0 = "agent.loop"(%plan) ({
  ^bb0(%fix.args.0: !gimlet.tokens<300>):
    %edit.kv = "model.prefill"(%fix.args.0, %request) {ctx = 0 : i64, device = "a.mi300x.0", devices = ["a.mi300x.0"], model = "llama-3.1-8b", of = "edit", partition = "phase", seconds = 0.04730172580766994 : f64, sym_name = "edit.prefill", tokens = 2300 : i64, variant = "phase"} : (!gimlet.tokens<300>, !gimlet.tokens<2000>) -> !gimlet.kv<301465600>
    %edit = "model.decode"(%edit.kv) {ctx = 2300 : i64, device = "a.mi300x.0", devices = ["a.mi300x.0"], model = "llama-3.1-8b", of = "edit", partition = "phase", seconds = 1.2067710630787898 : f64, sym_name = "edit.decode", tokens = 200 : i64, variant = "phase"} : (!gimlet.kv<301465600>) -> !gimlet.tokens<200>
    %run_tests = "agent.tool"(%edit) {cpu_s = 2.0 : f64, device = "n.host", devices = ["n.host#0"], output_tokens = 100 : i64, seconds = 2.0 : f64, sym_name = "run_tests", tool = "pytest"} : (!gimlet.tokens<200>) -> !gimlet.tokens<100>
    "agent.yield"(%run_tests) {sym_name = "fix.yield"} : (!gimlet.tokens<100>) -> ()
  }) {expected = 3.0 : f64, max = 8 : i64, sym_name = "fix"} : (!gimlet.tokens<300>) -> !gimlet.tokens<100>
  "agent.output"(%fix.results.0) {device = "n.host", devices = ["n.host#1"], seconds = 0.0 : f64, sym_name = "answer"} : (!gimlet.tokens<100>) -> ()
}

// CHECK:      module attributes {gimlet.level = "transfers", gimlet.name = "fixer", gimlet.objective = "latency"} {
// CHECK-NEXT:   %request = "agent.input"() {device = "n.host"
// Host to its own GPU over PCIe: 2 us + 8000 bytes (2000 token ids x 4) / 64 GB/s = 2.125 us.
// CHECK-NEXT:   %request.to.n.h200.0.sent = "exec.send"(%request) {bytes = 8000.0 : f64, channel = "n.host->n.h200.0", dst = "n.h200.0", latency = 2.0e-06 : f64, route = "direct", seconds = 2.125e-06 : f64, src = "n.host", sym_name = "send.request.to.n.h200.0"} : (!gimlet.tokens<2000>) -> !async.token
// CHECK-NEXT:   %request.to.n.h200.0, %request.to.n.h200.0.recv = "exec.recv"(%request.to.n.h200.0.sent) {bytes = 8000.0 : f64, channel = "n.host->n.h200.0", dst = "n.h200.0", src = "n.host", sym_name = "recv.request.to.n.h200.0"} : (!async.token) -> (!gimlet.tokens<2000>, !async.token)
// CHECK-NEXT:   %plan.kv = "model.prefill"(%request.to.n.h200.0) {{.*}}device = "n.h200.0"
// The KV cache crosses nodes: PCIe, RDMA, PCIe, stored and forwarded: 2 + 5 + 2 us and
// 1048576000 / 64e9 x 2 + 1048576000 / 50e9 = 0.032768 + 0.02097152 s, 0.05374852 s in all.
// CHECK-NEXT:   %plan.kv.to.a.mi300x.0.sent = "exec.send"(%plan.kv) {bytes = 1048576000.0 : f64, channel = "n.h200.0->a.mi300x.0", dst = "a.mi300x.0", latency = 9.0e-06 : f64, route = "network", seconds = 0.0537485{{[0-9]*}} : f64, src = "n.h200.0",
// CHECK-NEXT:   %plan.kv.to.a.mi300x.0, %plan.kv.to.a.mi300x.0.recv = "exec.recv"(%plan.kv.to.a.mi300x.0.sent) {bytes = 1048576000.0 : f64, {{.*}}dst = "a.mi300x.0", src = "n.h200.0",
// NVIDIA's and AMD's paged KV layouts differ: the cache is converted on the MI300X before the decode reads it.
// CHECK-NEXT:   %plan.kv.to.a.mi300x.0.converted, %plan.kv.to.a.mi300x.0.converted.done = "exec.convert"(%plan.kv.to.a.mi300x.0) {device = "a.mi300x.0", from_dtype = "bf16", from_layout = "{{[^"]+}}", seconds = {{[0-9.e-]+}} : f64, sym_name = "convert.plan.kv.to.a.mi300x.0", to_dtype = "bf16", to_layout = "{{[^"]+}}"}
// CHECK-NEXT:   %plan = "model.decode"(%plan.kv.to.a.mi300x.0.converted) {{.*}}device = "a.mi300x.0"
// The request is used inside the loop on the MI300X: it moves once, before the loop.
// CHECK-NEXT:   %request.to.a.mi300x.0.sent = "exec.send"(%request) {{.*}}route = "network"
// CHECK-NEXT:   %request.to.a.mi300x.0, %request.to.a.mi300x.0.recv = "exec.recv"(%request.to.a.mi300x.0.sent)
// CHECK-NEXT:   %fix.results.0 = "agent.loop"(%plan) ({
// CHECK-NEXT:   ^bb0(%fix.args.0: !gimlet.tokens<300>):
// CHECK-NEXT:     %edit.kv = "model.prefill"(%fix.args.0, %request.to.a.mi300x.0)
// CHECK-NEXT:     %edit = "model.decode"(%edit.kv)
// The edit goes back to the host for the tests, on every iteration.
// CHECK-NEXT:     %edit.to.n.host.sent = "exec.send"(%edit) {bytes = 800.0 : f64, {{.*}}dst = "n.host", {{.*}}src = "a.mi300x.0"
// CHECK-NEXT:     %edit.to.n.host, %edit.to.n.host.recv = "exec.recv"(%edit.to.n.host.sent)
// CHECK-NEXT:     %run_tests = "agent.tool"(%edit.to.n.host)
// The loop's back edge: the next iteration's edit (on the MI300X) reads the test log written on the host.
// The carried value lives on the MI300X: moving the 100-token log there every iteration and the result to
// the host once (4 x 400 B) moves less than keeping it on the host (the 300-token plan there once, then the
// argument to the MI300X every iteration: 4 x 1200 B).
// CHECK-NEXT:     %run_tests.to.a.mi300x.0.sent = "exec.send"(%run_tests) {bytes = 400.0 : f64, channel = "n.host->a.mi300x.0", dst = "a.mi300x.0", {{.*}}src = "n.host"
// CHECK-NEXT:     %run_tests.to.a.mi300x.0, %run_tests.to.a.mi300x.0.recv = "exec.recv"(%run_tests.to.a.mi300x.0.sent)
// CHECK-NEXT:     "agent.yield"(%run_tests.to.a.mi300x.0)
// CHECK-NEXT:   }) {expected = 3.0 : f64, max = 8 : i64, sym_name = "fix"}
// CHECK-NEXT:   %fix.results.0.to.n.host.sent = "exec.send"(%fix.results.0) {bytes = 400.0 : f64, {{.*}}dst = "n.host", {{.*}}src = "a.mi300x.0"
// CHECK-NEXT:   %fix.results.0.to.n.host, %fix.results.0.to.n.host.recv = "exec.recv"(%fix.results.0.to.n.host.sent)
// CHECK-NEXT:   "agent.output"(%fix.results.0.to.n.host)

// NOCLUSTER: gimletc: error: pipeline 'insert-transfers': pass 'insert-transfers' needs a cluster, and none was given
