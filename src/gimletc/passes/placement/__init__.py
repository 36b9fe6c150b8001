"""The place pass's machinery: the problem (units, slots, costs), the list-schedule evaluation of an
assignment, and the searches over assignments (exact, MILP, greedy and local search). The pass
itself is `gimletc.passes.place.Place`."""
