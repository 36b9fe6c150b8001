// speculative: every LLM call that names a draft model decodes speculatively. The draft (unit a.draft) has its
// own prefill; the decode is a loop of rounds: the draft proposes draft_k tokens, the target verifies them
// all at once (unit a.target), both roll their KV cache back past the first rejected token. Needs a cluster;
// keeps the model level.
// RUN: gimletc opt %s --pipeline speculative --cluster %S/../clusters/gpu_corsair.yaml | filecheck %s

module attributes {gimlet.level = "model", gimlet.name = "spec"} {
  %q = "agent.input"() {sym_name = "q", tokens = 1000 : i64} : () -> !gimlet.tokens<1000>
  %a.kv = "model.prefill"(%q) {ctx = 0 : i64, model = "llama-3.1-8b", of = "a", sym_name = "a.prefill", tokens = 1000 : i64} : (!gimlet.tokens<1000>) -> !gimlet.kv<131072000>
  %a = "model.decode"(%a.kv) {acceptance = 0.7 : f64, ctx = 1000 : i64, draft = "llama-3.2-1b", draft_k = 4 : i64, model = "llama-3.1-8b", of = "a", sym_name = "a.decode", tokens = 200 : i64} : (!gimlet.kv<131072000>) -> !gimlet.tokens<200>
  "agent.output"(%a) {sym_name = "o"} : (!gimlet.tokens<200>) -> ()
}

// CHECK:      module attributes {gimlet.level = "model", gimlet.name = "spec"} {
// CHECK-NEXT:   %q = "agent.input"()
// The target's prefill also makes the first token; llama-3.2-1b's cache: 16 layers x 8 x 64 x 2 x 2 = 32768
// bytes per token, 32768000 for the 1000-token prompt.
// CHECK-NEXT:   %a.kv, %a.first = "model.prefill"(%q) {ctx = 0 : i64, model = "llama-3.1-8b", {{.*}}unit = "a.target", variant = "speculative"} : (!gimlet.tokens<1000>) -> (!gimlet.kv<131072000>, !gimlet.tokens<1>)
// CHECK-NEXT:   %a.draft_kv = "model.prefill"(%q) {{.*}}model = "llama-3.2-1b", {{.*}}unit = "a.draft", variant = "speculative"} : (!gimlet.tokens<1000>) -> !gimlet.kv<32768000>
// CHECK-NEXT:   %a = "agent.loop"(%a.first) ({
// CHECK-NEXT:   ^bb0(%a.tok: !gimlet.tokens<1>):
// CHECK-NEXT:     %a.proposed = "model.draft"(%a.tok, %a.draft_kv) {{.*}}draft_k = 4 : i64, model = "llama-3.2-1b", {{.*}}unit = "a.draft"{{.*}} -> !gimlet.tokens<4>
// A round yields (1 - a^(k+1)) / (1 - a) tokens: with a = 0.7 and k = 4, (1 - 0.16807) / 0.3 = 2.7731;
// the target checks k + 1 = 5 positions.
// CHECK-NEXT:     %a.accepted = "model.verify"(%a.proposed, %a.kv) {acceptance = 0.7 : f64, {{.*}}model = "llama-3.1-8b", {{.*}}tokens = 5 : i64, unit = "a.target"{{.*}} -> !gimlet.tokens<2.7731>
// CHECK-NEXT:     "model.kv_rollback"(%a.accepted, %a.kv) {{.*}}unit = "a.target"
// CHECK-NEXT:     "agent.yield"(%a.accepted)
// 200 output tokens at 2.7731 a round: 72.12 rounds on average.
// CHECK-NEXT:   }) {expected = 72.121{{[0-9]+}} : f64, max = 200 : i64, sym_name = "a.decode"}
