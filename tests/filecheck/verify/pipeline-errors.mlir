// A pipeline's options are checked when it is parsed, and its order against the input's level (here agent)
// and the cluster before any pass runs: each mistake is one line naming the pass, and exit status 2.
// RUN: not gimletc opt %s --pipeline "expand-llm,place,schedule" --cluster %S/../clusters/one_h200.yaml 2>&1 | filecheck %s --check-prefix=NOTRANSFERS
// RUN: not gimletc opt %s --pipeline "expand-llm,schedule" 2>&1 | filecheck %s --check-prefix=NOPLACE
// RUN: not gimletc opt %s --pipeline "expand-llm,place,insert-transfers" 2>&1 | filecheck %s --check-prefix=NOCLUSTER
// RUN: not gimletc opt %s --pipeline "expand-llm,place{objective=fast}" 2>&1 | filecheck %s --check-prefix=OBJECTIVE
// RUN: not gimletc opt %s --pipeline "expand-llm,place{exact_limit=-5}" 2>&1 | filecheck %s --check-prefix=LIMIT
// RUN: not gimletc opt %s --pipeline "expand-llm,plaec" 2>&1 | filecheck %s --check-prefix=UNKNOWN
// An empty pipeline verifies the input and prints it back unchanged.
// RUN: gimletc opt %s | filecheck %s --check-prefix=SAME --match-full-lines

module attributes {gimlet.level = "agent", gimlet.name = "chat"} {
  %q = "agent.input"() {sym_name = "q", tokens = 1000 : i64} : () -> !gimlet.tokens<1000>
  %answer = "agent.llm"(%q) {model = "llama-3.1-8b", output_tokens = 100 : i64, sym_name = "answer", system_tokens = 200 : i64} : (!gimlet.tokens<1000>) -> !gimlet.tokens<100>
  "agent.output"(%answer) {sym_name = "out"} : (!gimlet.tokens<100>) -> ()
}

// NOTRANSFERS: gimletc: error: pipeline 'expand-llm,place,schedule': pass 'schedule' runs on transfers-level IR, but after place the IR is placed-level; run insert-transfers before it
// NOPLACE: gimletc: error: pipeline 'expand-llm,schedule': pass 'schedule' runs on transfers-level IR, but after expand-llm the IR is model-level; run place, insert-transfers before it
// NOCLUSTER: gimletc: error: pipeline 'expand-llm,place,insert-transfers': pass 'place' needs a cluster, and none was given
// OBJECTIVE: gimletc: error: pass 'place': option objective=fast is not one of latency, energy, cost, throughput, none
// LIMIT: gimletc: error: pass 'place': option exact_limit=-5 is not an int >= 0
// UNKNOWN: gimletc: error: pipeline 'expand-llm,plaec', position 11: unknown pass 'plaec'; known: {{.*}}place

// SAME:      module attributes {gimlet.level = "agent", gimlet.name = "chat"} {
// SAME-NEXT:   %q = "agent.input"() {sym_name = "q", tokens = 1000 : i64} : () -> !gimlet.tokens<1000>
// SAME-NEXT:   %answer = "agent.llm"(%q) {model = "llama-3.1-8b", output_tokens = 100 : i64, sym_name = "answer", system_tokens = 200 : i64} : (!gimlet.tokens<1000>) -> !gimlet.tokens<100>
// SAME-NEXT:   "agent.output"(%answer) {sym_name = "out"} : (!gimlet.tokens<100>) -> ()
// SAME-NEXT: }
