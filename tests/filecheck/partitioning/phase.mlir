// Partitioning variant "phase" (Splitwise, DistServe): the prefill and the decode are placed apart, here the
// prefill on an H200 and the decode on an MI300X; the KV cache moves between them, streamed in layer groups
// behind the prefill, and is converted to AMD's layout on arrival.
// RUN: gimletc opt %s --pipeline "place{partitions=phase},insert-transfers,schedule,overlap" --cluster %S/../clusters/h200_mi300x.yaml --pin answer.prefill=n.h200.0 --pin answer.decode=a.mi300x.0 | filecheck %s

module attributes {gimlet.level = "model", gimlet.name = "chat"} {
  %q = "agent.input"() {sym_name = "q", tokens = 1000 : i64} : () -> !gimlet.tokens<1000>
  %answer.kv = "model.prefill"(%q) {ctx = 0 : i64, model = "llama-3.1-8b", of = "answer", sym_name = "answer.prefill", tokens = 1200 : i64} : (!gimlet.tokens<1000>) -> !gimlet.kv<157286400>
  %answer = "model.decode"(%answer.kv) {ctx = 1200 : i64, model = "llama-3.1-8b", of = "answer", sym_name = "answer.decode", tokens = 100 : i64} : (!gimlet.kv<157286400>) -> !gimlet.tokens<100>
  "agent.output"(%answer) {sym_name = "out"} : (!gimlet.tokens<100>) -> ()
}

// CHECK:      module attributes {gimlet.level = "exec", gimlet.name = "chat", gimlet.objective = "latency"} {
// CHECK:        %answer.prefill.chunk0.done = "exec.compute"(%q.to.n.h200.0) {{.*}}device = "n.h200.0", {{.*}}kind_of = "model.prefill", {{.*}}variant = "phase"}
// CHECK:        %answer.kv, %answer.prefill.done = "exec.compute"(%answer.prefill.chunk6.done) {{.*}}chunk = 7 : i64, chunks = 8 : i64,
// llama-3.1-8b's cache for 1200 prompt tokens (1000 + 200 system): 1200 x 131072 = 157286400 bytes, an
// eighth of it (19660800) per chunk.
// CHECK-NEXT:   %send.answer.kv.to.a.mi300x.0.chunk0.sent = "exec.send"(%answer.prefill.chunk0.done) {bytes = 19660800.0 : f64, {{.*}}dst = "a.mi300x.0", {{.*}}src = "n.h200.0",
// CHECK:        %answer.kv.to.a.mi300x.0.sent = "exec.send"(%answer.kv) {bytes = 19660800.0 : f64,
// CHECK-NEXT:   %answer.kv.to.a.mi300x.0, %answer.kv.to.a.mi300x.0.recv = "exec.recv"(%answer.kv.to.a.mi300x.0.sent, {{.*}}) {bytes = 157286400.0 : f64,
// CHECK-NEXT:   %answer.kv.to.a.mi300x.0.converted, %answer.kv.to.a.mi300x.0.converted.done = "exec.convert"(%answer.kv.to.a.mi300x.0) {device = "a.mi300x.0",
// CHECK-NEXT:   %answer, %answer.decode.done = "exec.compute"(%answer.kv.to.a.mi300x.0.converted, %answer.kv.to.a.mi300x.0.converted.done) {{.*}}device = "a.mi300x.0", {{.*}}kind_of = "model.decode", {{.*}}variant = "phase"}
// The answer goes to the decode's own host.
// CHECK-NEXT:   %answer.to.a.host.sent = "exec.send"(%answer) {
// CHECK:        %out.done = "exec.compute"(%answer.to.a.host{{.*}}) {device = "a.host",
