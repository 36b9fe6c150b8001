// place: every op that runs gets the device it runs on (`device`, and `devices` for the group or the host
// lane), with its predicted seconds (cost model); `pinned` ops go where they are pinned; the graph becomes
// placed-level. Loops and yields run nowhere and get no device.
// RUN: gimletc opt %s --pipeline place --cluster %S/../clusters/h200_mi300x.yaml | filecheck %s
// RUN: gimletc opt %s --pipeline "place{objective=energy,partitions=whole}" --cluster %S/../clusters/h200_mi300x.yaml | filecheck %s --check-prefix=WHOLE

module attributes {gimlet.level = "model", gimlet.name = "fixer"} {
  %request = "agent.input"() {sym_name = "request", tokens = 2000 : i64} : () -> !gimlet.tokens<2000>
  %plan.kv = "model.prefill"(%request) {batch = 4 : i64, ctx = 0 : i64, model = "llama-3.1-8b", of = "plan", sym_name = "plan.prefill", tokens = 2000 : i64} : (!gimlet.tokens<2000>) -> !gimlet.kv<1048576000>
  %plan = "model.decode"(%plan.kv) {batch = 4 : i64, ctx = 2000 : i64, model = "llama-3.1-8b", of = "plan", pinned = "mi300x", sym_name = "plan.decode", tokens = 300 : i64} : (!gimlet.kv<1048576000>) -> !gimlet.tokens<300>
  %fix.results.0 = "agent.loop"(%plan) ({
  ^bb0(%fix.args.0: !gimlet.tokens<300>):
    %edit.kv = "model.prefill"(%fix.args.0, %request) {ctx = 0 : i64, model = "llama-3.1-8b", of = "edit", sym_name = "edit.prefill", tokens = 2300 : i64} : (!gimlet.tokens<300>, !gimlet.tokens<2000>) -> !gimlet.kv<301465600>
    %edit = "model.decode"(%edit.kv) {ctx = 2300 : i64, model = "llama-3.1-8b", of = "edit", sym_name = "edit.decode", tokens = 200 : i64} : (!gimlet.kv<301465600>) -> !gimlet.tokens<200>
    %run_tests = "agent.tool"(%edit) {cpu_s = 2.0 : f64, output_tokens = 100 : i64, pinned = "a.host", sym_name = "run_tests", tool = "pytest"} : (!gimlet.tokens<200>) -> !gimlet.tokens<100>
    "agent.yield"(%run_tests) {sym_name = "fix.yield"} : (!gimlet.tokens<100>) -> ()
  }) {expected = 3.0 : f64, max = 8 : i64, sym_name = "fix"} : (!gimlet.tokens<300>) -> !gimlet.tokens<100>
  "agent.output"(%fix.results.0) {sym_name = "answer"} : (!gimlet.tokens<100>) -> ()
}

// CHECK:      module attributes {gimlet.level = "placed", gimlet.name = "fixer", gimlet.objective = "latency"} {
// CHECK-NEXT:   %request = "agent.input"() {device = "{{[an]}}.host", devices = ["{{[an]}}.host#{{[0-9]}}"], seconds = 0.0 : f64,
// The decode is pinned to the MI300X; with partitions=auto the call's phases are placement units of their own.
// CHECK-NEXT:   %plan.kv = "model.prefill"(%request) {batch = 4 : i64, ctx = 0 : i64, device = "{{[^"]+}}", devices = [{{.+}}], {{.*}}partition = "phase", seconds = {{[0-9.e-]+}} : f64, sym_name = "plan.prefill", {{.*}}variant = "phase"}
// CHECK-NEXT:   %plan = "model.decode"(%plan.kv) {{.*}}device = "a.mi300x.0", devices = ["a.mi300x.0"], {{.*}}pinned = "mi300x", seconds = {{[0-9.e-]+}} : f64, sym_name = "plan.decode"
// CHECK-NEXT:   %fix.results.0 = "agent.loop"(%plan) ({
// CHECK-NEXT:   ^bb0(%fix.args.0: !gimlet.tokens<300>):
// CHECK-NEXT:     %edit.kv = "model.prefill"(%fix.args.0, %request) {ctx = 0 : i64, device = "{{[^"]+}}"
// CHECK-NEXT:     %edit = "model.decode"(%edit.kv) {ctx = 2300 : i64, device = "{{[^"]+}}"
// A tool's seconds are its cpu_s; pinned to a host, it takes one of the host's lanes.
// CHECK-NEXT:     %run_tests = "agent.tool"(%edit) {cpu_s = 2.0 : f64, device = "a.host", devices = ["a.host#{{[0-9]}}"], output_tokens = 100 : i64, pinned = "a.host", seconds = 2.0 : f64,
// CHECK-NEXT:     "agent.yield"(%run_tests) {sym_name = "fix.yield"}
// CHECK-NEXT:   }) {expected = 3.0 : f64, max = 8 : i64, sym_name = "fix"}
// CHECK-NEXT:   "agent.output"(%fix.results.0) {device = "{{[an]}}.host", devices = ["{{[an]}}.host#{{[0-9]}}"], seconds = 0.0 : f64, sym_name = "answer"}

// Options: the objective is recorded on the module; partitions=whole keeps each call's phases together,
// so the plan's prefill lands where its pinned decode is.
// WHOLE:      module attributes {gimlet.level = "placed", gimlet.name = "fixer", gimlet.objective = "energy"} {
// WHOLE:        %plan.kv = "model.prefill"(%request) {{.*}}device = "a.mi300x.0", {{.*}}variant = "whole"}
// WHOLE-NEXT:   %plan = "model.decode"(%plan.kv) {{.*}}device = "a.mi300x.0", {{.*}}variant = "whole"}
// WHOLE-NOT:    partition = "phase"
