// partition-attn-ffn: every LLM call's decode becomes a loop over steps whose body alternates, layer by layer,
// an attention block (unit a.attn, next to the KV cache) and an FFN/MoE block (unit a.ffn, next to the
// experts); the batch is split into two micro-batches that ping-pong. The prefill stays one op, split from
// the decode (partition = "phase"). Needs a cluster; keeps the model level.
// RUN: gimletc opt %s --pipeline partition-attn-ffn --cluster %S/../clusters/two_h200.yaml | filecheck %s

module attributes {gimlet.level = "model", gimlet.name = "moe"} {
  %q = "agent.input"() {sym_name = "q", tokens = 500 : i64} : () -> !gimlet.tokens<500>
  %a.kv = "model.prefill"(%q) {batch = 64 : i64, ctx = 0 : i64, model = "gpt-oss-20b", of = "a", sym_name = "a.prefill", tokens = 500 : i64} : (!gimlet.tokens<500>) -> !gimlet.kv<987758592>
  %a = "model.decode"(%a.kv) {batch = 64 : i64, ctx = 500 : i64, model = "gpt-oss-20b", of = "a", sym_name = "a.decode", tokens = 20 : i64} : (!gimlet.kv<987758592>) -> !gimlet.tokens<20>
  "agent.output"(%a) {sym_name = "o"} : (!gimlet.tokens<20>) -> ()
}

// gpt-oss-20b: 24 layers, hidden 2880. A batch of 64 in 2 micro-batches of 32; the activations between
// blocks are 32 x 2880 x 2 bytes = 184320; each step attends to the mean context 500 + 20/2 = 510.
// CHECK:      module attributes {gimlet.level = "model", gimlet.name = "moe"} {
// CHECK:        %a.kv, %a.first = "model.prefill"(%q) {batch = 64 : i64, {{.*}}partition = "phase", sym_name = "a.prefill", tokens = 500 : i64, variant = "attn-ffn"}
// CHECK-NEXT:   %a, %a.mb1 = "agent.loop"(%a.first, %a.first) ({
// CHECK-NEXT:   ^bb0(%a.tok0: !gimlet.tokens<1>, %a.tok1: !gimlet.tokens<1>):
// CHECK-NEXT:     %a.a0.m0 = "model.attention"(%a.tok0, %a.kv) {batch = 32 : i64, ctx = 510 : i64, layers = [0 : i64, 1 : i64], microbatch = 0 : i64, microbatches = 2 : i64, {{.*}}unit = "a.attn", variant = "attn-ffn"} : {{.*}} -> !gimlet.act<184320>
// CHECK-NEXT:     %a.f0.m0 = "model.ffn"(%a.a0.m0) {batch = 32 : i64, ctx = 510 : i64, layers = [0 : i64, 1 : i64], microbatch = 0 : i64, {{.*}}unit = "a.ffn", variant = "attn-ffn"} : (!gimlet.act<184320>) -> !gimlet.act<184320>
// CHECK-NEXT:     %a.a0.m1 = "model.attention"(%a.tok1, %a.kv) {{.*}}microbatch = 1 : i64, {{.*}}unit = "a.attn"
// CHECK-NEXT:     %a.f0.m1 = "model.ffn"(%a.a0.m1) {{.*}}microbatch = 1 : i64, {{.*}}unit = "a.ffn"
// CHECK-NEXT:     %a.a1.m0 = "model.attention"(%a.f0.m0, %a.kv) {{.*}}layers = [1 : i64, 2 : i64]
// CHECK:          %a.a23.m0 = "model.attention"(%a.f22.m0, %a.kv) {{.*}}layers = [23 : i64, 24 : i64]
// CHECK-NEXT:     %a.next0 = "model.ffn"(%a.a23.m0) {{.*}} -> !gimlet.tokens<1>
// CHECK-NEXT:     %a.a23.m1 = "model.attention"(%a.f22.m1, %a.kv)
// CHECK-NEXT:     %a.next1 = "model.ffn"(%a.a23.m1) {{.*}} -> !gimlet.tokens<1>
// CHECK-NEXT:     "agent.yield"(%a.next0, %a.next1)
// CHECK-NEXT:   }) {expected = 20.0 : f64, max = 20 : i64, sym_name = "a.decode"}
// CHECK-NEXT:   "agent.output"(%a)
