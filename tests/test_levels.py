"""IR levels: verify() checks what a graph labelled agent, model, placed, transfers or exec may hold."""

from __future__ import annotations

import pytest

from gimletc import AgentGraph
from gimletc.hardware import load_cluster
from gimletc.ir import ASYNC_TOKEN, LEVELS, Graph, IRError, Op, Type, Value, level_of, verify, verify_level
from gimletc.passes import PassContext, PassManager
from gimletc.passes.expand_llm import ExpandLLM
from gimletc.passes.insert_transfers import InsertTransfers
from gimletc.passes.place import Place
from gimletc.passes.schedule import Schedule

MIXED = load_cluster("mixed-rack")


def chat() -> Graph:
    g = AgentGraph("chat")
    q = g.input("q", tokens=1000)
    a = g.llm("answer", model="llama-3.1-8b", prompt=[q], output_tokens=100)
    g.output("out", [a])
    return g.build()


def tok(n: int) -> Type:
    return Type("tokens", n)


def test_levels_in_lowering_order():
    assert LEVELS == ("agent", "model", "placed", "transfers", "exec")


def test_every_level_of_the_default_pipeline_verifies_and_is_labelled():
    ctx = PassContext(cluster=MIXED, dump_after=frozenset({"*"}))
    out = PassManager("expand-llm,partition-phase,place,insert-transfers,schedule,overlap").run(chat(), ctx)
    assert out.attrs["gimlet.level"] == "exec"
    from gimletc.ir import parse_graph

    levels = {name: parse_graph(text).attrs["gimlet.level"] for name, text in ctx.dumps.items()}
    assert levels == {"expand-llm": "model", "partition-phase": "model", "place": "placed",
                      "insert-transfers": "transfers", "schedule": "exec", "overlap": "exec"}


def test_expand_llm_then_schedule_is_not_exec_level():
    """Run without the manager's order check, schedule would label model ops as exec-level IR: verify says no."""
    ctx = PassContext(cluster=MIXED)
    model = ExpandLLM().run(chat(), ctx)
    out = Schedule().run(model, ctx)
    assert out.attrs["gimlet.level"] == "exec" and "model.prefill" in out.kinds()
    with pytest.raises(IRError, match=r"exec-level IR holds op @q \(agent.input\): every agent and model op is lowered"):
        verify(out)
    without_input = out.replace_ops(op for op in out.ops if op.name != "q")
    with pytest.raises(IRError, match=r"exec-level IR holds op @answer\.prefill \(model\.prefill\)"):
        verify_level(without_input)


def test_place_then_schedule_without_transfers_fails_verification():
    """`expand-llm,place,schedule`: the prompt lives on the host, the prefill runs on a GPU, and nothing moves it."""
    ctx = PassContext(cluster=MIXED)
    placed = Place(partitions="phase").run(ExpandLLM().run(chat(), ctx), ctx)
    verify(placed)  # placed level: uses across devices are expected here
    out = Schedule().run(placed, ctx)
    with pytest.raises(IRError) as e:
        verify(out)
    msg = str(e.value)
    assert msg.startswith("exec-level IR: op @answer.prefill (exec.compute) on ")
    assert "uses %q, which lives on " in msg and "without a transfer" in msg
    # with the transfers inserted first, the same placement verifies at every level
    verify(Schedule().run(InsertTransfers().run(placed, ctx), ctx))


def test_transfers_level_also_forbids_uses_across_devices():
    ctx = PassContext(cluster=MIXED)
    placed = Place(partitions="phase").run(ExpandLLM().run(chat(), ctx), ctx)
    with pytest.raises(IRError, match="transfers-level IR: op @answer.prefill .* uses %q, which lives on"):
        verify(placed.with_attrs(**{"gimlet.level": "transfers"}))


def _input(device: str | None = None) -> Op:
    attrs = {"tokens": 10, **({"device": device} if device else {})}
    return Op("agent.input", "q", (), (Value("q", tok(10)),), attrs)


def _prefill(device: str | None = None) -> Op:
    attrs = {"model": "m", "tokens": 10, **({"device": device} if device else {})}
    return Op("model.prefill", "p", ("q",), (Value("kv", Type("kv", 100)),), attrs)


@pytest.mark.parametrize(
    ("level", "ops", "message"),
    [
        ("agent", (_input(), _prefill()), r"agent-level IR holds op @p \(model.prefill\): only agent\.\* ops"),
        ("model", (_input(), Op("agent.llm", "a", ("q",), (Value("a", tok(5)),), {"model": "m", "output_tokens": 5})),
         r"model-level IR holds op @a \(agent.llm\): an LLM call is expanded \(expand-llm\)"),
        ("model", (Op("exec.compute", "c", (), (Value("x", tok(1)), Value("t", ASYNC_TOKEN)),
                      {"of": "c", "device": "g0", "seconds": 0.0}),),
         r"model-level IR holds op @c \(exec.compute\)"),
        ("placed", (_input("host"), _prefill()), r"placed-level IR: op @p \(model.prefill\) is not placed"),
        ("exec", (_input("g0"),), r"exec-level IR holds op @q \(agent.input\): every agent and model op is lowered"),
    ],
)
def test_each_level_rejects_what_does_not_belong_to_it(level, ops, message):
    g = Graph(ops, attrs={"gimlet.level": level})
    with pytest.raises(IRError, match=message):
        verify(g)
    verify(g.with_attrs(**{"gimlet.level": None}))  # unlabelled, the same ops verify


def test_exec_level_uses_go_through_receives():
    compute = Op("exec.compute", "q", (), (Value("q", tok(10)), Value("q.done", ASYNC_TOKEN)),
                 {"of": "q", "device": "host", "seconds": 0.0})
    send = Op("exec.send", "s", ("q",), (Value("s", ASYNC_TOKEN),),
              {"src": "host", "dst": "g0", "route": "direct", "bytes": 40, "seconds": 1e-6, "channel": "host->g0"})
    recv = Op("exec.recv", "r", ("s",), (Value("q.g0", tok(10)), Value("r", ASYNC_TOKEN)),
              {"src": "host", "dst": "g0", "bytes": 40, "channel": "host->g0"})

    def use(value: str) -> Op:
        return Op("exec.compute", "use", (value, "q.done"), (Value("done", ASYNC_TOKEN),),
                  {"of": "use", "device": "g0", "seconds": 1.0})

    verify(Graph((compute, send, recv, use("q.g0")), attrs={"gimlet.level": "exec"}))
    with pytest.raises(IRError, match=r"op @use \(exec.compute\) on g0 uses %q, which lives on host"):
        verify(Graph((compute, send, recv, use("q")), attrs={"gimlet.level": "exec"}))
    bad_send = send.with_attrs(src="g1")
    with pytest.raises(IRError, match=r"op @s \(exec.send\) on g1 uses %q, which lives on host"):
        verify(Graph((compute, bad_send, recv, use("q.g0")), attrs={"gimlet.level": "exec"}))


def test_values_forwarded_by_loops_live_where_their_source_lives():
    compute = Op("exec.compute", "q", (), (Value("q", tok(10)), Value("q.done", ASYNC_TOKEN)),
                 {"of": "q", "device": "host", "seconds": 0.0})
    inner = Op("exec.compute", "step", ("it",), (Value("next", tok(10)), Value("step.done", ASYNC_TOKEN)),
               {"of": "step", "device": "host", "seconds": 1.0})
    body = Graph((inner, Op("agent.yield", "y", ("next",))), (Value("it", tok(10)),))
    loop = Op("agent.loop", "l", ("q",), (Value("res", tok(10)),), {"expected": 2.0, "max": 4}, (body,))
    after = Op("exec.compute", "after", ("res",), (Value("fin", ASYNC_TOKEN),),
               {"of": "after", "device": "host", "seconds": 0.0})
    verify(Graph((compute, loop, after), attrs={"gimlet.level": "exec"}))
    moved = after.with_attrs(device="g0")
    with pytest.raises(IRError, match=r"op @after \(exec.compute\) on g0 uses %res, which lives on host"):
        verify(Graph((compute, loop, moved), attrs={"gimlet.level": "exec"}))


def test_unknown_levels_are_errors():
    with pytest.raises(IRError, match="unknown IR level 'lowered'"):
        verify(Graph((_input(),), attrs={"gimlet.level": "lowered"}))
    with pytest.raises(IRError, match="unknown IR level 'lowered'"):
        verify_level(Graph((_input(),)), "lowered")  # type: ignore[arg-type]


def test_level_of_reads_the_label_or_infers_it():
    ctx = PassContext(cluster=MIXED)
    model = ExpandLLM().run(chat(), ctx)
    placed = Place(partitions="phase").run(model, ctx)
    transfers = InsertTransfers().run(placed, ctx)
    exe = Schedule().run(transfers, ctx)
    for g, want in ((chat(), "agent"), (model, "model"), (placed, "placed"), (transfers, "transfers"), (exe, "exec")):
        assert level_of(g) == want
        assert level_of(g.with_attrs(**{"gimlet.level": None})) == want


def _carried_loop(yielded: str, extra: tuple[Op, ...] = ()) -> Graph:
    """q on host moves to g0; a loop carries it: `step` on g0 uses it, `check` on host uses step's result
    (moved there), and the body yields `yielded` as the next iteration's value."""
    def compute(name: str, ins: tuple[str, ...], device: str, out: str) -> Op:
        return Op("exec.compute", name, ins, (Value(out, tok(10)), Value(f"{name}.done", ASYNC_TOKEN)),
                  {"of": name, "device": device, "seconds": 1.0})

    def move(v: str, src: str, dst: str) -> tuple[Op, Op]:
        attrs = {"src": src, "dst": dst, "bytes": 40, "channel": f"{src}->{dst}"}
        return (Op("exec.send", f"s.{v}", (v,), (Value(f"{v}.sent", ASYNC_TOKEN),),
                   {**attrs, "route": "direct", "seconds": 1e-6}),
                Op("exec.recv", f"r.{v}", (f"{v}.sent",), (Value(f"{v}.{dst}", tok(10)), Value(f"{v}.r", ASYNC_TOKEN)),
                   attrs))

    body = Graph((compute("step", ("it",), "g0", "next"), *move("next", "g0", "host"),
                  compute("check", ("next.host",), "host", "log"), *extra, Op("agent.yield", "y", (yielded,))),
                 (Value("it", tok(10)),))
    loop = Op("agent.loop", "l", ("q.g0",), (Value("res", tok(10)),), {"expected": 2.0, "max": 4}, (body,))
    return Graph((compute("q", (), "host", "q"), *move("q", "host", "g0"), loop), attrs={"gimlet.level": "exec"})


def test_exec_level_checks_the_loop_back_edge():
    """The body argument lives where the loop's operand lives (g0); a body yielding a value that lives on the
    host feeds the next iteration's `step` on g0 from the host, without a transfer: the back edge."""
    with pytest.raises(IRError, match=r"exec-level IR: loop @l yields %log on host as body argument %it, "
                                      r"which lives on g0, without a transfer"):
        verify(_carried_loop("log"))
    back = (Op("exec.send", "s.log", ("log",), (Value("log.sent", ASYNC_TOKEN),),
               {"src": "host", "dst": "g0", "bytes": 40, "channel": "host->g0", "route": "direct", "seconds": 1e-6}),
            Op("exec.recv", "r.log", ("log.sent",), (Value("log.g0", tok(10)), Value("log.r", ASYNC_TOKEN)),
               {"src": "host", "dst": "g0", "bytes": 40, "channel": "host->g0"}))
    verify(_carried_loop("log.g0", back))
    verify(_carried_loop("next"))  # step's result stays on g0: no back edge needed


def test_exec_level_checks_that_every_arm_yields_where_the_result_lives():
    def compute(name: str, device: str) -> Op:
        return Op("exec.compute", name, ("q",), (Value(name, tok(10)), Value(f"{name}.done", ASYNC_TOKEN)),
                  {"of": name, "device": device, "seconds": 1.0})

    q = Op("exec.compute", "q", (), (Value("q", tok(10)), Value("q.done", ASYNC_TOKEN)),
           {"of": "q", "device": "host", "seconds": 0.0})
    arms = (Graph((compute("a", "host"), Op("agent.yield", "ya", ("a",)))),
            Graph((compute("b", "g0"), Op("agent.yield", "yb", ("b",)))))
    branch = Op("agent.branch", "br", (), (Value("res", tok(10)),), {"probabilities": (0.5, 0.5)}, arms)
    with pytest.raises(IRError, match=r"exec-level IR: branch @br yields %b on g0 as result %res, which lives on host"):
        verify(Graph((q, branch), attrs={"gimlet.level": "exec"}))
