"""FillChoice measures both fill strategies and keeps using the cheaper one, retrying the other."""

from engine.grammar.fill_choice import POOL, SINGLE, FillChoice


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_calls(choice: FillChoice, clock: FakeClock, cost: dict[int, float], calls: int, rows: int = 64) -> list[int]:
    used = []

    def strategy(which: int):
        def fill() -> None:
            clock.now += cost[which] * rows
            used.append(which)
        return fill

    for _ in range(calls):
        choice.run(rows, strategy(SINGLE), strategy(POOL))
    return used


def test_prefers_the_cheaper_strategy_and_retries_the_other():
    clock = FakeClock()
    choice = FillChoice(retry_every=50, clock=clock)
    used = run_calls(choice, clock, {SINGLE: 10e-6, POOL: 40e-6}, 200)
    assert used[:2] == [SINGLE, POOL]  # both measured first
    assert used[2:].count(POOL) == 4  # one retry in 50 calls
    assert choice.uses == [used.count(SINGLE), used.count(POOL)]


def test_switches_when_the_workload_changes():
    clock = FakeClock()
    choice = FillChoice(retry_every=10, clock=clock)
    run_calls(choice, clock, {SINGLE: 10e-6, POOL: 40e-6}, 50)
    # rows got expensive on one thread (long strings, another schema): the pool takes over
    used = run_calls(choice, clock, {SINGLE: 200e-6, POOL: 60e-6}, 100)
    assert used[-50:].count(POOL) >= 45
