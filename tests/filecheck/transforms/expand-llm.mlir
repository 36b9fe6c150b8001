// expand-llm: every agent.llm becomes model.prefill (prompt -> KV cache) and model.decode (KV cache -> the
// call's result), nested ones included; the graph becomes model-level.
// RUN: gimletc opt %s --pipeline expand-llm | filecheck %s
// An already model-level graph is left as it is (expand-llm runs on agent or model IR).
// RUN: gimletc opt %s --pipeline expand-llm,expand-llm | filecheck %s

module attributes {gimlet.level = "agent", gimlet.name = "fixer"} {
  %request = "agent.input"() {sym_name = "request", tokens = 2000 : i64} : () -> !gimlet.tokens<2000>
  %plan = "agent.llm"(%request) {batch = 4 : i64, model = "llama-3.1-8b", output_tokens = 300 : i64, sym_name = "plan"} : (!gimlet.tokens<2000>) -> !gimlet.tokens<300>
  %fix.results.0 = "agent.loop"(%plan) ({
  ^bb0(%fix.args.0: !gimlet.tokens<300>):
    %edit = "agent.llm"(%fix.args.0, %request) {model = "llama-3.1-8b", output_tokens = 200 : i64, sym_name = "edit"} : (!gimlet.tokens<300>, !gimlet.tokens<2000>) -> !gimlet.tokens<200>
    %run_tests = "agent.tool"(%edit) {cpu_s = 2.0 : f64, output_tokens = 100 : i64, sym_name = "run_tests", tool = "pytest"} : (!gimlet.tokens<200>) -> !gimlet.tokens<100>
    "agent.yield"(%run_tests) {sym_name = "fix.yield"} : (!gimlet.tokens<100>) -> ()
  }) {expected = 3.0 : f64, max = 8 : i64, sym_name = "fix"} : (!gimlet.tokens<300>) -> !gimlet.tokens<100>
  "agent.output"(%fix.results.0) {sym_name = "answer"} : (!gimlet.tokens<100>) -> ()
}

// CHECK:      module attributes {gimlet.level = "model", gimlet.name = "fixer"} {
// CHECK-NEXT:   %request = "agent.input"()
// The KV cache of llama-3.1-8b: 32 layers x 8 KV heads x 128 dims x 2 (K and V) x 2 bytes = 131072 bytes
// per token; the plan's prompt is 2000 tokens for each of 4 sequences: 2000 x 4 x 131072 = 1048576000.
// CHECK-NEXT:   %plan.kv = "model.prefill"(%request) {batch = 4 : i64, ctx = 0 : i64, model = "llama-3.1-8b", of = "plan", sym_name = "plan.prefill", tokens = 2000 : i64} : (!gimlet.tokens<2000>) -> !gimlet.kv<1048576000>
// CHECK-NEXT:   %plan = "model.decode"(%plan.kv) {batch = 4 : i64, ctx = 2000 : i64, model = "llama-3.1-8b", of = "plan", sym_name = "plan.decode", tokens = 300 : i64} : (!gimlet.kv<1048576000>) -> !gimlet.tokens<300>
// CHECK-NEXT:   %fix.results.0 = "agent.loop"(%plan) ({
// CHECK-NEXT:   ^bb0(%fix.args.0: !gimlet.tokens<300>):
// Inside the loop: the prompt is the carried 300 tokens plus the 2000-token request, 2300 x 131072 bytes.
// CHECK-NEXT:     %edit.kv = "model.prefill"(%fix.args.0, %request) {ctx = 0 : i64, {{.*}} tokens = 2300 : i64} : {{.*}} -> !gimlet.kv<301465600>
// CHECK-NEXT:     %edit = "model.decode"(%edit.kv) {ctx = 2300 : i64, {{.*}} tokens = 200 : i64}
// CHECK-NEXT:     %run_tests = "agent.tool"(%edit)
// CHECK-NEXT:     "agent.yield"(%run_tests)
// CHECK-NOT:    agent.llm
// CHECK:        "agent.output"(%fix.results.0)
