// overlap: removes the token edges that make devices wait for copies (a send no longer holds its source's
// chain, a receive no longer waits for the destination's earlier work), and streams a KV cache that goes to
// another chip in layer groups: the prefill runs as `chunks` pieces, each followed by the send of its
// layers' cache, so the copy of one group overlaps the compute of the next. Each rewrite is kept only if the
// replayed makespan does not grow. Runs on exec-level IR and keeps the level.
// RUN: gimletc opt %s --pipeline overlap | filecheck %s
// RUN: gimletc opt %s --pipeline "overlap{stream=false}" | filecheck %s --check-prefix=ASYNC
// RUN: not gimletc opt %s --pipeline "overlap{chunks=0}" 2>&1 | filecheck %s --check-prefix=BAD

module attributes {gimlet.level = "exec", gimlet.name = "fixer", gimlet.objective = "latency"} {
  %request, %request.done = "exec.compute"() {device = "n.host", devices = ["n.host#0"], kind_of = "agent.input", of = "request", seconds = 0.0 : f64, sym_name = "request", tokens = 2000 : i64} : () -> (!gimlet.tokens<2000>, !async.token)
  %request.to.n.h200.0.sent = "exec.send"(%request, %request.done) {bytes = 8000.0 : f64, channel = "n.host->n.h200.0", dst = "n.h200.0", latency = 2.0e-06 : f64, route = "direct", seconds = 2.125e-06 : f64, src = "n.host", sym_name = "send.request.to.n.h200.0"} : (!gimlet.tokens<2000>, !async.token) -> !async.token
  %request.to.n.h200.0, %request.to.n.h200.0.recv = "exec.recv"(%request.to.n.h200.0.sent) {bytes = 8000.0 : f64, channel = "n.host->n.h200.0", dst = "n.h200.0", src = "n.host", sym_name = "recv.request.to.n.h200.0"} : (!async.token) -> (!gimlet.tokens<2000>, !async.token)
  %plan.kv, %plan.prefill.done = "exec.compute"(%request.to.n.h200.0, %request.to.n.h200.0.recv) {batch = 4 : i64, ctx = 0 : i64, device = "n.h200.0", devices = ["n.h200.0"], kind_of = "model.prefill", llm = "plan", model = "llama-3.1-8b", of = "plan.prefill", seconds = 0.19621251877672743 : f64, sym_name = "plan.prefill", tokens = 2000 : i64, variant = "phase"} : (!gimlet.tokens<2000>, !async.token) -> (!gimlet.kv<1048576000>, !async.token)
  %plan.kv.to.a.mi300x.0.sent = "exec.send"(%plan.kv, %plan.prefill.done) {bytes = 1048576000.0 : f64, channel = "n.h200.0->a.mi300x.0", dst = "a.mi300x.0", latency = 9.0e-06 : f64, route = "network", seconds = 0.053748519999999994 : f64, src = "n.h200.0", sym_name = "send.plan.kv.to.a.mi300x.0"} : (!gimlet.kv<1048576000>, !async.token) -> !async.token
  %plan.kv.to.a.mi300x.0, %plan.kv.to.a.mi300x.0.recv = "exec.recv"(%plan.kv.to.a.mi300x.0.sent) {bytes = 1048576000.0 : f64, channel = "n.h200.0->a.mi300x.0", dst = "a.mi300x.0", src = "n.h200.0", sym_name = "recv.plan.kv.to.a.mi300x.0"} : (!async.token) -> (!gimlet.kv<1048576000>, !async.token)
  %plan.kv.to.a.mi300x.0.converted, %plan.kv.to.a.mi300x.0.converted.done = "exec.convert"(%plan.kv.to.a.mi300x.0, %plan.kv.to.a.mi300x.0.recv) {device = "a.mi300x.0", from_dtype = "bf16", from_layout = "paged-nhd", seconds = 0.00046447065854508037 : f64, sym_name = "convert.plan.kv.to.a.mi300x.0", to_dtype = "bf16", to_layout = "paged-hnd"} : (!gimlet.kv<1048576000>, !async.token) -> (!gimlet.kv<1048576000>, !async.token)
  %plan, %plan.decode.done = "exec.compute"(%plan.kv.to.a.mi300x.0.converted, %plan.kv.to.a.mi300x.0.converted.done) {batch = 4 : i64, ctx = 2000 : i64, device = "a.mi300x.0", devices = ["a.mi300x.0"], kind_of = "model.decode", llm = "plan", model = "llama-3.1-8b", of = "plan.decode", seconds = 1.8691223807385926 : f64, sym_name = "plan.decode", tokens = 300 : i64, variant = "phase"} : (!gimlet.kv<1048576000>, !async.token) -> (!gimlet.tokens<300>, !async.token)
  %request.to.a.mi300x.0.sent = "exec.send"(%request, %request.to.n.h200.0.sent) {bytes = 8000.0 : f64, channel = "n.host->a.mi300x.0", dst = "a.mi300x.0", latency = 7.000000000000001e-06 : f64, route = "network", seconds = 7.2850000000000006e-06 : f64, src = "n.host", sym_name = "send.request.to.a.mi300x.0"} : (!gimlet.tokens<2000>, !async.token) -> !async.token
  %request.to.a.mi300x.0, %request.to.a.mi300x.0.recv = "exec.recv"(%request.to.a.mi300x.0.sent, %plan.decode.done) {bytes = 8000.0 : f64, channel = "n.host->a.mi300x.0", dst = "a.mi300x.0", src = "n.host", sym_name = "recv.request.to.a.mi300x.0"} : (!async.token, !async.token) -> (!gimlet.tokens<2000>, !async.token)
  %fix.results.0 = "agent.loop"(%plan) ({
  ^bb0(%fix.args.0: !gimlet.tokens<300>):
    %edit.kv, %edit.prefill.done = "exec.compute"(%fix.args.0, %request.to.a.mi300x.0) {ctx = 0 : i64, device = "a.mi300x.0", devices = ["a.mi300x.0"], kind_of = "model.prefill", llm = "edit", model = "llama-3.1-8b", of = "edit.prefill", seconds = 0.04730172580766994 : f64, sym_name = "edit.prefill", tokens = 2300 : i64, variant = "phase"} : (!gimlet.tokens<300>, !gimlet.tokens<2000>) -> (!gimlet.kv<301465600>, !async.token)
    %edit, %edit.decode.done = "exec.compute"(%edit.kv, %edit.prefill.done) {ctx = 2300 : i64, device = "a.mi300x.0", devices = ["a.mi300x.0"], kind_of = "model.decode", llm = "edit", model = "llama-3.1-8b", of = "edit.decode", seconds = 1.2067710630787898 : f64, sym_name = "edit.decode", tokens = 200 : i64, variant = "phase"} : (!gimlet.kv<301465600>, !async.token) -> (!gimlet.tokens<200>, !async.token)
    %edit.to.n.host.sent = "exec.send"(%edit, %edit.decode.done) {bytes = 800.0 : f64, channel = "a.mi300x.0->n.host", dst = "n.host", latency = 7.000000000000001e-06 : f64, route = "network", seconds = 7.0285000000000006e-06 : f64, src = "a.mi300x.0", sym_name = "send.edit.to.n.host"} : (!gimlet.tokens<200>, !async.token) -> !async.token
    %edit.to.n.host, %edit.to.n.host.recv = "exec.recv"(%edit.to.n.host.sent) {bytes = 800.0 : f64, channel = "a.mi300x.0->n.host", dst = "n.host", src = "a.mi300x.0", sym_name = "recv.edit.to.n.host"} : (!async.token) -> (!gimlet.tokens<200>, !async.token)
    %run_tests, %run_tests.done = "exec.compute"(%edit.to.n.host, %edit.to.n.host.recv) {cpu_s = 2.0 : f64, device = "n.host", devices = ["n.host#0"], kind_of = "agent.tool", of = "run_tests", output_tokens = 100 : i64, seconds = 2.0 : f64, sym_name = "run_tests", tool = "pytest"} : (!gimlet.tokens<200>, !async.token) -> (!gimlet.tokens<100>, !async.token)
    %run_tests.to.a.mi300x.0.sent = "exec.send"(%run_tests, %run_tests.done) {bytes = 400.0 : f64, channel = "n.host->a.mi300x.0", dst = "a.mi300x.0", latency = 7.000000000000001e-06 : f64, route = "network", seconds = 7.01425e-06 : f64, src = "n.host", sym_name = "send.run_tests.to.a.mi300x.0"} : (!gimlet.tokens<100>, !async.token) -> !async.token
    %run_tests.to.a.mi300x.0, %run_tests.to.a.mi300x.0.recv = "exec.recv"(%run_tests.to.a.mi300x.0.sent, %edit.to.n.host.sent) {bytes = 400.0 : f64, channel = "n.host->a.mi300x.0", dst = "a.mi300x.0", src = "n.host", sym_name = "recv.run_tests.to.a.mi300x.0"} : (!async.token, !async.token) -> (!gimlet.tokens<100>, !async.token)
    "agent.yield"(%run_tests.to.a.mi300x.0) {sym_name = "fix.yield"} : (!gimlet.tokens<100>) -> ()
  }) {expected = 3.0 : f64, max = 8 : i64, sym_name = "fix"} : (!gimlet.tokens<300>) -> !gimlet.tokens<100>
  %fix.results.0.to.n.host.sent = "exec.send"(%fix.results.0) {bytes = 400.0 : f64, channel = "a.mi300x.0->n.host", dst = "n.host", latency = 7.000000000000001e-06 : f64, route = "network", seconds = 7.01425e-06 : f64, src = "a.mi300x.0", sym_name = "send.fix.results.0.to.n.host"} : (!gimlet.tokens<100>) -> !async.token
  %fix.results.0.to.n.host, %fix.results.0.to.n.host.recv = "exec.recv"(%fix.results.0.to.n.host.sent) {bytes = 400.0 : f64, channel = "a.mi300x.0->n.host", dst = "n.host", src = "a.mi300x.0", sym_name = "recv.fix.results.0.to.n.host"} : (!async.token) -> (!gimlet.tokens<100>, !async.token)
  %answer.done = "exec.compute"(%fix.results.0.to.n.host, %fix.results.0.to.n.host.recv) {device = "n.host", devices = ["n.host#1"], kind_of = "agent.output", of = "answer", seconds = 0.0 : f64, sym_name = "answer"} : (!gimlet.tokens<100>, !async.token) -> !async.token
}

// CHECK:      module attributes {gimlet.level = "exec", gimlet.name = "fixer", gimlet.objective = "latency"} {
// CHECK-NEXT:   %request, %request.done = "exec.compute"()
// The send to the GPU no longer takes the host's chain token (%request.done).
// CHECK-NEXT:   %request.to.n.h200.0.sent = "exec.send"(%request) {
// CHECK-NEXT:   %request.to.n.h200.0, %request.to.n.h200.0.recv = "exec.recv"(%request.to.n.h200.0.sent)
// The 0.19621251877672743 s prefill runs as 8 chunks of 0.19621251877672743 / 8 = 0.0245265648... s.
// CHECK-NEXT:   %plan.prefill.chunk0.done = "exec.compute"(%request.to.n.h200.0) {{.*}}chunk = 0 : i64, chunks = 8 : i64, {{.*}}seconds = 0.02452656{{[0-9]*}} : f64, sym_name = "plan.prefill.chunk0"
// CHECK-NEXT:   %plan.prefill.chunk1.done = "exec.compute"(%plan.prefill.chunk0.done) {{.*}}chunk = 1 : i64
// CHECK:        %plan.kv, %plan.prefill.done = "exec.compute"(%plan.prefill.chunk6.done) {{.*}}chunk = 7 : i64, chunks = 8 : i64, {{.*}}sym_name = "plan.prefill",
// Each chunk's send carries an eighth of the cache, 1048576000 / 8 = 131072000 bytes, in the route's full
// latency plus an eighth of its bandwidth time: 9e-6 + (0.05374852 - 9e-6) / 8 = 0.00672644 s.
// CHECK-NEXT:   %send.plan.kv.to.a.mi300x.0.chunk0.sent = "exec.send"(%plan.prefill.chunk0.done) {bytes = 131072000.0 : f64, {{.*}}chunks = 8 : i64, {{.*}}seconds = 0.0067264{{[0-9]*}} : f64,
// CHECK:        %plan.kv.to.a.mi300x.0.sent = "exec.send"(%plan.kv) {bytes = 131072000.0 : f64,
// The receive completes when every chunk has arrived.
// CHECK-NEXT:   %plan.kv.to.a.mi300x.0, %plan.kv.to.a.mi300x.0.recv = "exec.recv"(%plan.kv.to.a.mi300x.0.sent, %send.plan.kv.to.a.mi300x.0.chunk0.sent, {{.*}}%send.plan.kv.to.a.mi300x.0.chunk6.sent) {bytes = 1048576000.0 : f64,
// CHECK-NEXT:   %plan.kv.to.a.mi300x.0.converted, %plan.kv.to.a.mi300x.0.converted.done = "exec.convert"(%plan.kv.to.a.mi300x.0) {
// CHECK-NEXT:   %plan, %plan.decode.done = "exec.compute"(%plan.kv.to.a.mi300x.0.converted, %plan.kv.to.a.mi300x.0.converted.done)
// The second send from the host and its receive wait for nothing but the data.
// CHECK-NEXT:   %request.to.a.mi300x.0.sent = "exec.send"(%request) {
// CHECK-NEXT:   %request.to.a.mi300x.0, %request.to.a.mi300x.0.recv = "exec.recv"(%request.to.a.mi300x.0.sent) {

// Without streaming, only the waits go: the prefill stays one op and the cache moves in one send.
// ASYNC:      %request.to.n.h200.0.sent = "exec.send"(%request) {
// ASYNC:      %plan.kv, %plan.prefill.done = "exec.compute"(%request.to.n.h200.0) {
// ASYNC-NEXT: %plan.kv.to.a.mi300x.0.sent = "exec.send"(%plan.kv) {bytes = 1048576000.0 : f64,
// ASYNC-NOT:  chunk
// ASYNC:      %request.to.a.mi300x.0, %request.to.a.mi300x.0.recv = "exec.recv"(%request.to.a.mi300x.0.sent) {

// BAD: gimletc: error: pass 'overlap': option chunks=0 is not an int >= 1
