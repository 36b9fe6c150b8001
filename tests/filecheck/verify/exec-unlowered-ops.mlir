// verify() at exec level: only exec ops and the structural agent ops (loop, branch, yield) remain. This is
// what `expand-llm,schedule` would make if run by hand (the manager refuses that order): schedule labels
// the graph exec-level but lowers nothing, since nothing is placed. Reading it back is an error.
// RUN: not gimletc opt %s 2>&1 | filecheck %s

module attributes {gimlet.level = "exec", gimlet.name = "chat"} {
  %q = "agent.input"() {sym_name = "q", tokens = 1000 : i64} : () -> !gimlet.tokens<1000>
  %answer.kv = "model.prefill"(%q) {ctx = 0 : i64, model = "llama-3.1-8b", of = "answer", sym_name = "answer.prefill", tokens = 1200 : i64} : (!gimlet.tokens<1000>) -> !gimlet.kv<157286400>
  %answer = "model.decode"(%answer.kv) {ctx = 1200 : i64, model = "llama-3.1-8b", of = "answer", sym_name = "answer.decode", tokens = 100 : i64} : (!gimlet.kv<157286400>) -> !gimlet.tokens<100>
  "agent.output"(%answer) {sym_name = "out"} : (!gimlet.tokens<100>) -> ()
}

// CHECK: gimletc: error: the input graph does not verify: exec-level IR holds op @q (agent.input): every agent and model op is lowered to exec.compute (schedule)
