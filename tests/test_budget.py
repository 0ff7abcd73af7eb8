import pytest

from genepool.core.budget import Budget, BudgetExceeded, BudgetTracker
from genepool.llm import Completion
from genepool.store import release_daily_usd, reserve_daily_usd, spent_today


def _c(p=10, c=5, usd=0.0, cached=False):
    return Completion("x", p, c, 1.0, usd, cached, "h")


def test_rollout_cap_is_never_overshot_when_checking_before_each_call():
    tracker = BudgetTracker(Budget(max_rollouts=5))
    made = 0
    with pytest.raises(BudgetExceeded) as exc:
        while True:
            tracker.check()
            made += 1
            tracker.record(_c())
    assert made == 5 and tracker.spent["rollouts"] == 5 and tracker.remaining_rollouts == 0
    assert exc.value.cap == "max_rollouts"
    assert "max_rollouts would reach 6 (spent 5 + this call 1) but the limit is 5" in str(exc.value)
    assert tracker.exhausted()


def test_batch_check_and_resume_from_spent():
    tracker = BudgetTracker(Budget(max_rollouts=10), spent={"rollouts": 7})
    assert tracker.remaining_rollouts == 3
    with pytest.raises(BudgetExceeded):
        tracker.check(4)
    tracker.check(3)
    with pytest.raises(ValueError, match="unknown keys"):
        BudgetTracker(Budget(), spent={"calls": 1})


def test_token_cap_uses_the_callers_upper_bound():
    tracker = BudgetTracker(Budget(max_tokens=100))
    for _ in range(6):
        tracker.check(tokens=15)
        tracker.record(_c(10, 5))
    assert tracker.spent["tokens"] == 90
    with pytest.raises(BudgetExceeded, match="max_tokens"):
        tracker.check(tokens=15)
    assert tracker.spent["tokens"] <= 100


def test_usd_cap_counts_only_uncached_cost():
    tracker = BudgetTracker(Budget(max_usd=0.01))
    tracker.record(_c(usd=0.006))
    tracker.record(_c(usd=0.006, cached=True))  # served from the cache: free
    assert tracker.spent["usd"] == pytest.approx(0.006)
    tracker.check(usd=0.004)
    with pytest.raises(BudgetExceeded, match="max_usd"):
        tracker.check(usd=0.005)
    assert BudgetTracker(Budget()).remaining_rollouts is None
    with pytest.raises(ValueError, match="max_rollouts=-1"):
        Budget(max_rollouts=-1)


def _log_call(db, usd, partition_key, days_ago=0):
    db.execute(
        "INSERT INTO genepool.llm_calls (request_hash, provider, model, purpose, partition_key, cached,"
        " prompt_tokens, completion_tokens, latency_ms, wall_ms, cost_usd, created_at)"
        " VALUES ('h', 'p', 'm', 'eval', %s, false, 1, 1, 1, 1, %s, now() - make_interval(days => %s))",
        (partition_key, usd, days_ago),
    )


def test_spent_today_and_daily_cap(db):
    assert spent_today(db) == 0.0
    _log_call(db, 0.25, "support-desk/g0001")
    _log_call(db, 0.5, "support-desk/g0002")
    _log_call(db, 1.0, "support_desk2/g0001")
    _log_call(db, 9.0, "support-desk/g0000", days_ago=2)  # not today
    assert spent_today(db) == pytest.approx(1.75)
    assert spent_today(db, "support-desk") == pytest.approx(0.75)
    assert spent_today(db, "support_desk2") == pytest.approx(1.0)
    # a call reserves what it may cost, atomically with reading today's spend of every run
    r1 = reserve_daily_usd(db, 2.0, 0.2, "support-desk/g0003")
    assert r1 is not None
    with pytest.raises(BudgetExceeded, match=r"max_usd_per_day would reach 2\.05"):
        reserve_daily_usd(db, 2.0, 0.1, "critic/g0001")  # 1.75 spent + 0.2 reserved + 0.1 > 2.0
    release_daily_usd(db, r1)
    assert reserve_daily_usd(db, 2.0, 0.0, "critic/g0001") is None  # a free call reserves nothing
    db.execute("INSERT INTO genepool.usd_reservations (usd, created_at) VALUES (5, now() - interval '20 minutes')")
    assert reserve_daily_usd(db, 2.0, 0.2, "critic/g0001") is not None  # a crashed run's reservation expired
    with pytest.raises(BudgetExceeded, match="max_usd_per_day"):
        reserve_daily_usd(db, 1.75, 0.0, None)  # the cap is already reached: even a free call is refused
