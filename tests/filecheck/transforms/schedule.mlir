// schedule: every placed agent and model op becomes an exec.compute on its device, keeping its results and
// adding a done token; each device (and host lane) runs its ops in graph order, made explicit by chaining
// tokens. Transfers join the chains as a runtime without asynchronous copies runs them: a send after its
// producer on the source, a receive and a conversion before their consumer on the destination. Runs on
// transfers-level IR; the graph becomes exec-level.
// RUN: gimletc opt %s --pipeline schedule | filecheck %s
// Scheduling exec-level IR again is refused before anything runs.
// RUN: not gimletc opt %s --pipeline "schedule,schedule" 2>&1 | filecheck %s --check-prefix=ORDER

module attributes {gimlet.level = "transfers", gimlet.name = "fixer", gimlet.objective = "latency"} {
  %request = "agent.input"() {device = "n.host", devices = ["n.host#0"], seconds = 0.0 : f64, sym_name = "request", tokens = 2000 : i64} : () -> !gimlet.tokens<2000>
  %request.to.n.h200.0.sent = "exec.send"(%request) {bytes = 8000.0 : f64, channel = "n.host->n.h200.0", dst = "n.h200.0", latency = 2.0e-06 : f64, route = "direct", seconds = 2.125e-06 : f64, src = "n.host", sym_name = "send.request.to.n.h200.0"} : (!gimlet.tokens<2000>) -> !async.token
  %request.to.n.h200.0, %request.to.n.h200.0.recv = "exec.recv"(%request.to.n.h200.0.sent) {bytes = 8000.0 : f64, channel = "n.host->n.h200.0", dst = "n.h200.0", src = "n.host", sym_name = "recv.request.to.n.h200.0"} : (!async.token) -> (!gimlet.tokens<2000>, !async.token)
  %plan.kv = "model.prefill"(%request.to.n.h200.0) {batch = 4 : i64, ctx = 0 : i64, device = "n.h200.0", devices = ["n.h200.0"], model = "llama-3.1-8b", of = "plan", partition = "phase", seconds = 0.19621251877672743 : f64, sym_name = "plan.prefill", tokens = 2000 : i64, variant = "phase"} : (!gimlet.tokens<2000>) -> !gimlet.kv<1048576000>
  %plan.kv.to.a.mi300x.0.sent = "exec.send"(%plan.kv) {bytes = 1048576000.0 : f64, channel = "n.h200.0->a.mi300x.0", dst = "a.mi300x.0", latency = 9.0e-06 : f64, route = "network", seconds = 0.053748519999999994 : f64, src = "n.h200.0", sym_name = "send.plan.kv.to.a.mi300x.0"} : (!gimlet.kv<1048576000>) -> !async.token
  %plan.kv.to.a.mi300x.0, %plan.kv.to.a.mi300x.0.recv = "exec.recv"(%plan.kv.to.a.mi300x.0.sent) {bytes = 1048576000.0 : f64, channel = "n.h200.0->a.mi300x.0", dst = "a.mi300x.0", src = "n.h200.0", sym_name = "recv.plan.kv.to.a.mi300x.0"} : (!async.token) -> (!gimlet.kv<1048576000>, !async.token)
  %plan.kv.to.a.mi300x.0.converted, %plan.kv.to.a.mi300x.0.converted.done = "exec.convert"(%plan.kv.to.a.mi300x.0) {device = "a.mi300x.0", from_dtype = "bf16", from_layout = "paged-nhd", seconds = 0.00046447065854508037 : f64, sym_name = "convert.plan.kv.to.a.mi300x.0", to_dtype = "bf16", to_layout = "paged-hnd"} : (!gimlet.kv<1048576000>) -> (!gimlet.kv<1048576000>, !async.token)
  %plan = "model.decode"(%plan.kv.to.a.mi300x.0.converted) {batch = 4 : i64, ctx = 2000 : i64, device = "a.mi300x.0", devices = ["a.mi300x.0"], model = "llama-3.1-8b", of = "plan", partition = "phase", seconds = 1.8691223807385926 : f64, sym_name = "plan.decode", tokens = 300 : i64, variant = "phase"} : (!gimlet.kv<1048576000>) -> !gimlet.tokens<300>
  %request.to.a.mi300x.0.sent = "exec.send"(%request) {bytes = 8000.0 : f64, channel = "n.host->a.mi300x.0", dst = "a.mi300x.0", latency = 7.000000000000001e-06 : f64, route = "network", seconds = 7.2850000000000006e-06 : f64, src = "n.host", sym_name = "send.request.to.a.mi300x.0"} : (!gimlet.tokens<2000>) -> !async.token
  %request.to.a.mi300x.0, %request.to.a.mi300x.0.recv = "exec.recv"(%request.to.a.mi300x.0.sent) {bytes = 8000.0 : f64, channel = "n.host->a.mi300x.0", dst = "a.mi300x.0", src = "n.host", sym_name = "recv.request.to.a.mi300x.0"} : (!async.token) -> (!gimlet.tokens<2000>, !async.token)
  %fix.results.0 = "agent.loop"(%plan) ({
  ^bb0(%fix.args.0: !gimlet.tokens<300>):
    %edit.kv = "model.prefill"(%fix.args.0, %request.to.a.mi300x.0) {ctx = 0 : i64, device = "a.mi300x.0", devices = ["a.mi300x.0"], model = "llama-3.1-8b", of = "edit", partition = "phase", seconds = 0.04730172580766994 : f64, sym_name = "edit.prefill", tokens = 2300 : i64, variant = "phase"} : (!gimlet.tokens<300>, !gimlet.tokens<2000>) -> !gimlet.kv<301465600>
    %edit = "model.decode"(%edit.kv) {ctx = 2300 : i64, device = "a.mi300x.0", devices = ["a.mi300x.0"], model = "llama-3.1-8b", of = "edit", partition = "phase", seconds = 1.2067710630787898 : f64, sym_name = "edit.decode", tokens = 200 : i64, variant = "phase"} : (!gimlet.kv<301465600>) -> !gimlet.tokens<200>
    %edit.to.n.host.sent = "exec.send"(%edit) {bytes = 800.0 : f64, channel = "a.mi300x.0->n.host", dst = "n.host", latency = 7.000000000000001e-06 : f64, route = "network", seconds = 7.0285000000000006e-06 : f64, src = "a.mi300x.0", sym_name = "send.edit.to.n.host"} : (!gimlet.tokens<200>) -> !async.token
    %edit.to.n.host, %edit.to.n.host.recv = "exec.recv"(%edit.to.n.host.sent) {bytes = 800.0 : f64, channel = "a.mi300x.0->n.host", dst = "n.host", src = "a.mi300x.0", sym_name = "recv.edit.to.n.host"} : (!async.token) -> (!gimlet.tokens<200>, !async.token)
    %run_tests = "agent.tool"(%edit.to.n.host) {cpu_s = 2.0 : f64, device = "n.host", devices = ["n.host#0"], output_tokens = 100 : i64, seconds = 2.0 : f64, sym_name = "run_tests", tool = "pytest"} : (!gimlet.tokens<200>) -> !gimlet.tokens<100>
    %run_tests.to.a.mi300x.0.sent = "exec.send"(%run_tests) {bytes = 400.0 : f64, channel = "n.host->a.mi300x.0", dst = "a.mi300x.0", latency = 7.000000000000001e-06 : f64, route = "network", seconds = 7.01425e-06 : f64, src = "n.host", sym_name = "send.run_tests.to.a.mi300x.0"} : (!gimlet.tokens<100>) -> !async.token
    %run_tests.to.a.mi300x.0, %run_tests.to.a.mi300x.0.recv = "exec.recv"(%run_tests.to.a.mi300x.0.sent) {bytes = 400.0 : f64, channel = "n.host->a.mi300x.0", dst = "a.mi300x.0", src = "n.host", sym_name = "recv.run_tests.to.a.mi300x.0"} : (!async.token) -> (!gimlet.tokens<100>, !async.token)
    "agent.yield"(%run_tests.to.a.mi300x.0) {sym_name = "fix.yield"} : (!gimlet.tokens<100>) -> ()
  }) {expected = 3.0 : f64, max = 8 : i64, sym_name = "fix"} : (!gimlet.tokens<300>) -> !gimlet.tokens<100>
  %fix.results.0.to.n.host.sent = "exec.send"(%fix.results.0) {bytes = 400.0 : f64, channel = "a.mi300x.0->n.host", dst = "n.host", latency = 7.000000000000001e-06 : f64, route = "network", seconds = 7.01425e-06 : f64, src = "a.mi300x.0", sym_name = "send.fix.results.0.to.n.host"} : (!gimlet.tokens<100>) -> !async.token
  %fix.results.0.to.n.host, %fix.results.0.to.n.host.recv = "exec.recv"(%fix.results.0.to.n.host.sent) {bytes = 400.0 : f64, channel = "a.mi300x.0->n.host", dst = "n.host", src = "a.mi300x.0", sym_name = "recv.fix.results.0.to.n.host"} : (!async.token) -> (!gimlet.tokens<100>, !async.token)
  "agent.output"(%fix.results.0.to.n.host) {device = "n.host", devices = ["n.host#1"], seconds = 0.0 : f64, sym_name = "answer"} : (!gimlet.tokens<100>) -> ()
}

// CHECK:      module attributes {gimlet.level = "exec", gimlet.name = "fixer", gimlet.objective = "latency"} {
// CHECK-NEXT:   %request, %request.done = "exec.compute"() {device = "n.host", devices = ["n.host#0"], kind_of = "agent.input", of = "request", seconds = 0.0 : f64, sym_name = "request", tokens = 2000 : i64} : () -> (!gimlet.tokens<2000>, !async.token)
// The send waits for the last op on its source (the input), the prefill for the receive.
// CHECK-NEXT:   %request.to.n.h200.0.sent = "exec.send"(%request, %request.done)
// CHECK-NEXT:   %request.to.n.h200.0, %request.to.n.h200.0.recv = "exec.recv"(%request.to.n.h200.0.sent)
// CHECK-NEXT:   %plan.kv, %plan.prefill.done = "exec.compute"(%request.to.n.h200.0, %request.to.n.h200.0.recv) {{.*}}device = "n.h200.0", {{.*}}kind_of = "model.prefill", llm = "plan", {{.*}}of = "plan.prefill",
// CHECK-NEXT:   %plan.kv.to.a.mi300x.0.sent = "exec.send"(%plan.kv, %plan.prefill.done)
// CHECK-NEXT:   %plan.kv.to.a.mi300x.0, %plan.kv.to.a.mi300x.0.recv = "exec.recv"(%plan.kv.to.a.mi300x.0.sent)
// CHECK-NEXT:   %plan.kv.to.a.mi300x.0.converted, %plan.kv.to.a.mi300x.0.converted.done = "exec.convert"(%plan.kv.to.a.mi300x.0, %plan.kv.to.a.mi300x.0.recv)
// CHECK-NEXT:   %plan, %plan.decode.done = "exec.compute"(%plan.kv.to.a.mi300x.0.converted, %plan.kv.to.a.mi300x.0.converted.done) {{.*}}kind_of = "model.decode"
// The host's copy engine orders its sends; the MI300X's receive waits for the decode before it.
// CHECK-NEXT:   %request.to.a.mi300x.0.sent = "exec.send"(%request, %request.to.n.h200.0.sent)
// CHECK-NEXT:   %request.to.a.mi300x.0, %request.to.a.mi300x.0.recv = "exec.recv"(%request.to.a.mi300x.0.sent, %plan.decode.done)
// CHECK-NEXT:   %fix.results.0 = "agent.loop"(%plan) ({
// CHECK-NEXT:   ^bb0(%fix.args.0: !gimlet.tokens<300>):
// CHECK-NEXT:     %edit.kv, %edit.prefill.done = "exec.compute"(%fix.args.0, %request.to.a.mi300x.0)
// CHECK-NEXT:     %edit, %edit.decode.done = "exec.compute"(%edit.kv, %edit.prefill.done)
// CHECK-NEXT:     %edit.to.n.host.sent = "exec.send"(%edit, %edit.decode.done)
// CHECK-NEXT:     %edit.to.n.host, %edit.to.n.host.recv = "exec.recv"(%edit.to.n.host.sent)
// CHECK-NEXT:     %run_tests, %run_tests.done = "exec.compute"(%edit.to.n.host, %edit.to.n.host.recv) {cpu_s = 2.0 : f64, device = "n.host", {{.*}}kind_of = "agent.tool",
// The back edge: the log's send waits for the tool on its lane; its receive waits for the MI300X's last op.
// CHECK-NEXT:     %run_tests.to.a.mi300x.0.sent = "exec.send"(%run_tests, %run_tests.done)
// CHECK-NEXT:     %run_tests.to.a.mi300x.0, %run_tests.to.a.mi300x.0.recv = "exec.recv"(%run_tests.to.a.mi300x.0.sent, %edit.to.n.host.sent)
// CHECK-NEXT:     "agent.yield"(%run_tests.to.a.mi300x.0)
// CHECK-NEXT:   })
// CHECK-NEXT:   %fix.results.0.to.n.host.sent = "exec.send"(%fix.results.0)
// CHECK-NEXT:   %fix.results.0.to.n.host, %fix.results.0.to.n.host.recv = "exec.recv"(%fix.results.0.to.n.host.sent)
// CHECK-NEXT:   %answer.done = "exec.compute"(%fix.results.0.to.n.host, %fix.results.0.to.n.host.recv) {device = "n.host", {{.*}}kind_of = "agent.output", of = "answer",

// ORDER: gimletc: error: pipeline 'schedule,schedule': pass 'schedule' runs on transfers-level IR, but after schedule the IR is exec-level; it cannot come after schedule
