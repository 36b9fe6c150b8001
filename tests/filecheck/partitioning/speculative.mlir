// Partitioning variant "speculative": the draft model on the d-Matrix Corsair (SRAM), the target on an H100
// (pinned by placement unit). Each round the draft's 4 proposed tokens go to the target, which verifies them
// and rolls its cache back; the accepted tokens go back to the draft for the next round.
// RUN: gimletc opt %s --pipeline "place{partitions=speculative},insert-transfers,schedule,overlap" --cluster %S/../clusters/gpu_corsair.yaml --pin a.draft=d.dmatrix-corsair.0 --pin a.target=g.h100-sxm.0 | filecheck %s

module attributes {gimlet.level = "model", gimlet.name = "spec"} {
  %q = "agent.input"() {sym_name = "q", tokens = 1000 : i64} : () -> !gimlet.tokens<1000>
  %a.kv = "model.prefill"(%q) {ctx = 0 : i64, model = "llama-3.1-8b", of = "a", sym_name = "a.prefill", tokens = 1000 : i64} : (!gimlet.tokens<1000>) -> !gimlet.kv<131072000>
  %a = "model.decode"(%a.kv) {acceptance = 0.7 : f64, ctx = 1000 : i64, draft = "llama-3.2-1b", draft_k = 4 : i64, model = "llama-3.1-8b", of = "a", sym_name = "a.decode", tokens = 200 : i64} : (!gimlet.kv<131072000>) -> !gimlet.tokens<200>
  "agent.output"(%a) {sym_name = "o"} : (!gimlet.tokens<200>) -> ()
}

// CHECK:      module attributes {gimlet.level = "exec", gimlet.name = "spec", gimlet.objective = "latency"} {
// CHECK:        %a.kv, %a.first, %a.prefill.done = "exec.compute"(%q.to.g.h100-sxm.0{{.*}}device = "g.h100-sxm.0", {{.*}}model = "llama-3.1-8b", {{.*}}variant = "speculative"}
// The prompt goes to the draft's chip too, for the draft's own prefill.
// CHECK-NEXT:   %q.to.d.dmatrix-corsair.0.sent = "exec.send"(%q) {bytes = 4000.0 : f64,
// CHECK-NEXT:   %q.to.d.dmatrix-corsair.0, %q.to.d.dmatrix-corsair.0.recv = "exec.recv"(%q.to.d.dmatrix-corsair.0.sent
// CHECK-NEXT:   %a.draft_kv, %a.draft_prefill.done = "exec.compute"(%q.to.d.dmatrix-corsair.0{{.*}}device = "d.dmatrix-corsair.0", {{.*}}model = "llama-3.2-1b",
// CHECK-NEXT:   %a = "agent.loop"(%a.first) ({
// CHECK-NEXT:   ^bb0(%a.tok: !gimlet.tokens<1>):
// CHECK-NEXT:     %a.tok.to.d.dmatrix-corsair.0.sent = "exec.send"(%a.tok) {bytes = 4.0 : f64, {{.*}}dst = "d.dmatrix-corsair.0", {{.*}}src = "g.h100-sxm.0",
// CHECK-NEXT:     %a.tok.to.d.dmatrix-corsair.0, %a.tok.to.d.dmatrix-corsair.0.recv = "exec.recv"(%a.tok.to.d.dmatrix-corsair.0.sent
// CHECK-NEXT:     %a.proposed, %a.draft.done = "exec.compute"(%a.tok.to.d.dmatrix-corsair.0, %a.draft_kv{{.*}}device = "d.dmatrix-corsair.0", {{.*}}draft_k = 4 : i64, {{.*}}kind_of = "model.draft",
// 4 proposed token ids, 16 bytes, to the target.
// CHECK-NEXT:     %a.proposed.to.g.h100-sxm.0.sent = "exec.send"(%a.proposed{{.*}}) {bytes = 16.0 : f64, {{.*}}dst = "g.h100-sxm.0",
// CHECK-NEXT:     %a.proposed.to.g.h100-sxm.0, %a.proposed.to.g.h100-sxm.0.recv = "exec.recv"(%a.proposed.to.g.h100-sxm.0.sent
// CHECK-NEXT:     %a.accepted, %a.verify.done = "exec.compute"(%a.proposed.to.g.h100-sxm.0, %a.kv{{.*}}device = "g.h100-sxm.0", {{.*}}kind_of = "model.verify",
// CHECK-NEXT:     %a.rollback.done = "exec.compute"(%a.accepted, %a.kv{{.*}}device = "g.h100-sxm.0", {{.*}}kind_of = "model.kv_rollback",
// CHECK-NEXT:     "agent.yield"(%a.accepted)
// CHECK-NEXT:   }) {expected = 72.121{{[0-9]+}} : f64, max = 200 : i64, sym_name = "a.decode"}
