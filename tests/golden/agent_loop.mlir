module attributes {gimlet.level = "agent", gimlet.source = "examples/coder.py"} {
  %req = "agent.input"() {sym_name = "req", tokens = 100 : i64} : () -> !gimlet.tokens<100>
  %docs = "agent.retrieve"(%req) {doc_tokens = 512 : i64, index_docs = 1000000 : i64, k = 3 : i64, note = "say \"hi\"\\ then\nstop\09\00", sym_name = "search"} : (!gimlet.tokens<100>) -> !gimlet.tokens<1536>
  %plan = "agent.llm"(%req, %docs) {acceptance = 0.7 : f64, draft = "llama-3.2-1b", draft_k = 4 : i64, model = "llama-3.1-8b", output_tokens = 50 : i64, sym_name = "plan", system_tokens = 200 : i64} : (!gimlet.tokens<100>, !gimlet.tokens<1536>) -> !gimlet.tokens<50>
  %fix = "agent.loop"(%plan) ({
  ^bb0(%it: !gimlet.tokens<50>):
    %run = "agent.tool"(%it) {cpu_s = 3.0 : f64, output_tokens = 20 : i64, sym_name = "run", tool = "pytest"} : (!gimlet.tokens<50>) -> !gimlet.tokens<20>
    %lint = "agent.code"(%run) {cpu_s = 1.0e-05 : f64, output_tokens = 8 : i64, sym_name = "lint"} : (!gimlet.tokens<20>) -> !gimlet.tokens<8>
    "agent.yield"(%lint) {sym_name = "fix.yield"} : (!gimlet.tokens<8>) -> ()
  }) {expected = 2.5 : f64, max = 8 : i64, sym_name = "fix"} : (!gimlet.tokens<50>) -> !gimlet.tokens<8>
  %answer = "agent.branch"() ({
    "agent.yield"(%fix) {sym_name = "answer.short"} : (!gimlet.tokens<8>) -> ()
  }, {
    %long = "agent.llm"(%fix, %docs) {model = "llama-3.1-8b", output_tokens = 400 : i64, sym_name = "expand"} : (!gimlet.tokens<8>, !gimlet.tokens<1536>) -> !gimlet.tokens<400>
    "agent.yield"(%long) {sym_name = "answer.long"} : (!gimlet.tokens<400>) -> ()
  }) {probabilities = [0.25 : f64, 0.75 : f64], sym_name = "answer"} : () -> !gimlet.tokens<400>
  "agent.output"(%answer) {devices = ["cpu-0", ["é", true, -1 : i64, 1.0e-300 : f64], []], sym_name = "out"} : (!gimlet.tokens<400>) -> ()
}
