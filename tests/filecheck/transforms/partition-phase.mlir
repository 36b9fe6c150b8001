// partition-phase: each LLM call's prefill and decode become placement units of their own (`partition` and
// `variant` = "phase"), so place may put them on different chips; a call another pass has already partitioned
// (it has a `variant`) is left alone. It runs on model-level IR and keeps the level.
// RUN: gimletc opt %s --pipeline partition-phase | filecheck %s
// After place it is too late to partition: the pipeline is refused before any pass runs.
// RUN: not gimletc opt %s --pipeline "place,partition-phase" --cluster %S/../clusters/one_h200.yaml 2>&1 | filecheck %s --check-prefix=ORDER

module attributes {gimlet.level = "model", gimlet.name = "fixer"} {
  %request = "agent.input"() {sym_name = "request", tokens = 2000 : i64} : () -> !gimlet.tokens<2000>
  %plan.kv = "model.prefill"(%request) {batch = 4 : i64, ctx = 0 : i64, model = "llama-3.1-8b", of = "plan", sym_name = "plan.prefill", tokens = 2000 : i64} : (!gimlet.tokens<2000>) -> !gimlet.kv<1048576000>
  %plan = "model.decode"(%plan.kv) {batch = 4 : i64, ctx = 2000 : i64, model = "llama-3.1-8b", of = "plan", sym_name = "plan.decode", tokens = 300 : i64} : (!gimlet.kv<1048576000>) -> !gimlet.tokens<300>
  %fix.results.0 = "agent.loop"(%plan) ({
  ^bb0(%fix.args.0: !gimlet.tokens<300>):
    %edit.kv = "model.prefill"(%fix.args.0, %request) {ctx = 0 : i64, model = "llama-3.1-8b", of = "edit", sym_name = "edit.prefill", unit = "edit", tokens = 2300 : i64, variant = "whole"} : (!gimlet.tokens<300>, !gimlet.tokens<2000>) -> !gimlet.kv<301465600>
    %edit = "model.decode"(%edit.kv) {ctx = 2300 : i64, model = "llama-3.1-8b", of = "edit", sym_name = "edit.decode", unit = "edit", tokens = 200 : i64, variant = "whole"} : (!gimlet.kv<301465600>) -> !gimlet.tokens<200>
    %run_tests = "agent.tool"(%edit) {cpu_s = 2.0 : f64, output_tokens = 100 : i64, sym_name = "run_tests", tool = "pytest"} : (!gimlet.tokens<200>) -> !gimlet.tokens<100>
    "agent.yield"(%run_tests) {sym_name = "fix.yield"} : (!gimlet.tokens<100>) -> ()
  }) {expected = 3.0 : f64, max = 8 : i64, sym_name = "fix"} : (!gimlet.tokens<300>) -> !gimlet.tokens<100>
  "agent.output"(%fix.results.0) {sym_name = "answer"} : (!gimlet.tokens<100>) -> ()
}

// CHECK:      module attributes {gimlet.level = "model", gimlet.name = "fixer"} {
// CHECK:        %plan.kv = "model.prefill"(%request) {{.*}}of = "plan", partition = "phase", sym_name = "plan.prefill", tokens = 2000 : i64, variant = "phase"}
// CHECK-NEXT:   %plan = "model.decode"(%plan.kv) {{.*}}of = "plan", partition = "phase", sym_name = "plan.decode", tokens = 300 : i64, variant = "phase"}
// CHECK:          %edit.kv = "model.prefill"(%fix.args.0, %request) {ctx = 0 : i64, model = "llama-3.1-8b", of = "edit", sym_name = "edit.prefill", tokens = 2300 : i64, unit = "edit", variant = "whole"}
// CHECK-NEXT:     %edit = "model.decode"(%edit.kv) {ctx = 2300 : i64, model = "llama-3.1-8b", of = "edit", sym_name = "edit.decode", tokens = 200 : i64, unit = "edit", variant = "whole"}

// ORDER: gimletc: error: pipeline 'place,partition-phase': pass 'partition-phase' runs on model-level IR, but after place the IR is placed-level; it cannot come after place
