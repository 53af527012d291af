"""Every tuning constant of the greedy fast path and the baselines, with where its value came from.

"Measured" points to the run that chose the value: a section of ``docs/benchmarks.md`` (the
scripts in ``benchmarks/`` print those tables) or a commit whose message gives the figures. A value
that no run compared with another says so: "chosen by hand, not measured". Changing any of them
changes the greedy's answers; rerun ``benchmarks/greedy_escalation.py`` or
``benchmarks/solver_gaps.py`` on the committed windows before and after.

The numerical guards at the end are not tuning: they keep floating-point noise from counting as
a gain or an overload, and moving them does not trade speed for quality.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- search effort ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effort:
    """How hard the greedy works on one window.

    Attributes
    ----------
    temperatures
        Smoothing temperatures of the dual, as fractions of the mean pair cost, in order. Three
        rather than two: two gave median gap 0.265% and p95 13.77% against 0.086% and 6.85%
        (``docs/benchmarks.md``, "Greedy: search budget against gap"); the values themselves
        were chosen by hand, not measured.
    dual_evaluations
        Dual evaluations allowed per temperature. 15 instead of 25 gave p95 12.16% against
        6.85% (same section); 10 and 15 at the first two temperatures only, later, gave p95
        3.87% ("Greedy: stopping at 0.5%...", "Rejected in one-off probes").
    search_work
        Work units for repair and local search (about a microsecond of NumPy time each, see
        :class:`~qlmio_opt.solvers.local_search.Budget`) on a window of up to
        ``reference_pairs`` request-node pairs. 14,000: budgets of 12,000, 13,000 and 15,000
        gave p95 2.85%, 2.69% and 2.69% ("Greedy: prices, rounding and room-making"), 10,000
        left window 017 at 15.0% ("stopping at 0.5%..."). Doubled to 28,000 once the iterated
        local search and the large-neighbourhood search had come (their budgets are shares of
        this one), measured on the tuning sets only (one-off probes, the committed windows
        against ``instances/bks.csv``, heavy-variant windows of the new tuning seed 12, GAP
        seeds 10-19; each variant's figures of one run): committed median / p95 / mean gap
        0.056 / 2.80 / 0.686% at 14,000, 0.042 / 2.74 / 0.568% at 21,000, 0.031 / 1.81 /
        0.391% at 28,000, median time 16.9, 18.3 and 17.7 ms, mean 55.9, 74.4 and 91.0 ms
        (load 1.8); heavy s12 median 0.191%, 0.094% and 0.091% (104, 112 and 114 ms); GAP mean
        0.508% and 0.471% at 14,000 and 28,000 (115 and 220 ms median).
    reference_pairs, max_work_scale
        Larger windows get proportionally more work, up to ``max_work_scale`` times
        ``search_work``: one move costs more there, and a fixed budget left 10,000 x 12 windows
        3.1% above the bound, 1.3% with four times the work, for about 50 ms more ("Greedy: the
        dual without its dense matrix"). 12,000 pairs: above every committed window (at most
        ~8,000 pairs), so their budget did not change.
    variants
        Price-guided searches tried (price scales :data:`PRICE_SCALES`, then random
        perturbations). 12: chosen by hand, not measured.
    gap
        The search stops once the incumbent is within this relative gap of the dual bound (and
        the second repair is skipped when the first ends within it). 0.5% rather than 0.2%:
        on the committed windows the median gap went from 0.04% to 0.05% and the windows
        further off stayed the same, for less time on the windows that settle early
        ("Greedy: stopping at 0.5%...").
    escalate_gap, escalate_scale
        When the search ends further than ``escalate_gap`` from the dual bound, it goes on from
        its best state with ``escalate_scale`` times its budget more (0: never). The bound says
        where there is room, so the extra work goes to the few windows that need it; the
        escalated search goes on where the first one stopped (see
        :class:`~qlmio_opt.solvers.greedy.Memo`). Twice the budget gave the same gaps as three
        times on the committed windows, and the same windows above 3% on 80 held-out ones;
        seven times was measured too ("Greedy: escalation where the bound leaves room"). The 2%
        threshold was chosen by hand, not measured against others.
    polish_scale
        Budget, in searches' budgets, of the final polish: improving shifts and swaps from the
        best state (0: none). Swaps keep node counts, so they reach the exchanges of requests
        between packed nodes and links that single moves and room-making chains miss. The
        polish at half a budget took the median gap from 0.050% to 0.038% (commit 3e89a37,
        "Greedy: the memo and the final swap polish"); the half was chosen by hand, not
        measured against other shares.
    regret_fallback
        Whether a window whose priced start stays infeasible after both repairs gets a second
        start, the regret construction of :mod:`qlmio_opt.solvers.greedy_regret`, repaired and
        searched the same way (False: report it infeasible at once, as before). On the 400
        tight GAP-style windows of ``benchmarks/gap_instances.py`` (10 x 3 to 100 x 10,
        families C and D), HiGHS proved 394 feasible; the priced start alone answered 354 of
        them, with the second start all 394 (branch of issue 20). Windows whose priced start
        ends feasible never reach it, so their answers do not change (the 100 committed
        windows gave the same assignments with and without it).
    perturb_scale, perturb_gap
        The iterated local search after the polish
        (:func:`~qlmio_opt.solvers.greedy_perturb.perturbed_search`: kick a few requests,
        repair, settle; keep if better) runs on a window whose answer is further than
        ``perturb_gap`` from the bound, until it is within it or its budget ends: that budget
        is ``perturb_scale`` searches' budgets times the answer's gap to the bound as a share
        of ``escalate_gap`` (at most 1), so windows near their bound spend little (0: none).
        Measured on the tuning sets only, in one-off probes (branch of issue 20, a harness not
        committed, with ``benchmarks/greedy_held_out.py``'s windows and cached references: the
        committed windows against ``instances/bks.csv``, default-scenario seed 2 windows 0-29
        and the GAP-style windows of seeds 10-19 against cold exact). On the GAP-style windows
        the mean gap was 1.79% without it, 1.05%, 0.82% and 0.78% with a flat budget of 1, 2
        and 3 searches' budgets, 0.69% with 6 at about twice the time of 3; 3 it is.
        ``perturb_gap`` 0.1% rather than ``gap``'s 0.5% took the committed median from 0.077%
        to 0.056% and seed 2's from 0.065% to 0.051% (at 1 search's budget; the 0.5% stopping
        gap leaves windows 0.1-0.5% above their optimum alone). Scaling the budget by the room
        to the bound kept the committed windows' median time at 1.09-1.29x that of the greedy
        without the search in four runs on the loaded machine (1.24x in one run with a flat
        budget of 1), both timed on the same windows in each run.
    lns_scale
        The large-neighbourhood search after the iterated local search
        (:func:`~qlmio_opt.solvers.greedy_lns.neighbourhood_search`: free a few columns'
        requests, re-solve the MILP over them with HiGHS, keep if better) runs on a window whose
        answer is further than ``gap`` from the bound, until it is within it or its budget ends:
        ``lns_scale`` searches' budgets times the same share of the room as the iterated local
        search's (0: none). Measured on the tuning sets only (branch of issue 20, one-off probes
        with the harness above): on the GAP-style windows of seeds 10-19 the mean gap was 0.740%
        without it, 0.524% and 0.508% with 1.5 and 3 (on top of the iterated local search's 3;
        splitting those 3 as 1.5 + 1.5 or 2 + 1 gave 0.600% and 0.593%); on the committed
        windows the mean went from 0.719% to 0.686%, the p95 from 2.98% to 2.80%, the median
        from 0.059% to 0.056%. Running it above ``gap`` rather than ``perturb_gap`` gave the
        same gaps on both sets and spares the windows between the two. An exhaustive search
        of two columns' requests (every placement, up to 4,096) in place of HiGHS reached
        0.636% at the same budget and no better with four times the placements or twice the
        budget (every pair of columns was soon optimal); three columns 0.599% at about twice
        the time. ``python benchmarks/greedy_held_out.py --sets gap --gap-first 10`` prints the
        first and the chosen: mean 0.740% and 0.508%, greedy median 28.9 ms and 132.4 ms (load
        0.2 and 1.6): the search spends its budget on these windows, whose optimum stays above
        the stopping gap. On the committed windows the median time went from 20.3 to 21.5 ms
        (each window's fastest of three runs, alternating, load 2; a one-off probe), the mean
        from 28.8 to 58.8 ms: 46 of them end above ``gap`` and get it.
    """

    temperatures: tuple[float, ...] = (0.1, 0.01, 0.001)
    dual_evaluations: int = 25
    search_work: float = 28_000.0
    reference_pairs: int = 12_000
    max_work_scale: float = 4.0
    variants: int = 12
    gap: float = 5e-3
    escalate_gap: float = 0.02
    escalate_scale: float = 2.0
    polish_scale: float = 0.5
    regret_fallback: bool = True
    perturb_scale: float = 3.0
    perturb_gap: float = 1e-3
    lns_scale: float = 3.0

    def work_for(self, pairs: int) -> float:
        """The search budget of a window with ``pairs`` request-node pairs."""
        scale = min(max(pairs / self.reference_pairs, 1.0), self.max_work_scale)
        return self.search_work * scale


# ``greedy-thorough``: eight times the budget of 14,000 units, no escalation, and the earlier
# stopping gap of 0.2%. Measured against 2x and 4x (p95 2.50% against 3.65% and 3.36%, "Greedy:
# search budget against gap") and against the escalating greedy (``docs/benchmarks.md``, first
# table). Four times today's ``search_work`` (28,000): the same 112,000 units.
THOROUGH_WORK_SCALE = 4
THOROUGH_GAP = 2e-3

# -- repair and room-making -------------------------------------------------------------------

# Two ways to repair the rounding: overload penalised at a multiple of its dual price, and how
# fast that penalty grows while overloads remain. The gentle one lets requests cascade longer.
# Neither is better on every window, so both are run and the better result is kept (the second
# is skipped when the first ends within ``Effort.gap``: "Greedy: stopping at 0.5%..."). The
# factors and growth rates were chosen by hand, not measured.
REPAIRS = ((2.0, 2.0), (0.5, 1.2))
# Each repair's own allowance, as a share of the search budget at its start, so that the
# second is not starved by the first one's descent. Chosen by hand, not measured.
REPAIR_ALLOWANCE_SHARE = 0.25
# Overload penalties are at least this fraction of a typical pair cost per typical request's
# use (a dual price is 0 where the relaxation had room). Chosen by hand, not measured.
REPAIR_WEIGHT_FLOOR = 0.1
# Passes of penalised moves a repair tries first, then rounds of least-cost relief moves.
# Chosen by hand, not measured.
REPAIR_PENALTY_PASSES = 60
REPAIR_ROUNDS = 50
# Overload penalties of the room-making search, as a multiple of the dual prices: the firmer of
# the two repairs' (a chain is then pushed through to feasibility instead of stalling half-way).
# Kept because it helped on the committed windows ("Greedy: prices, rounding and room-making").
ROOM_FACTOR = 2.0
# Growth of a room-making chain's penalties per pass while overloads remain (the firm repair's).
# Chosen by hand, not measured.
ROOM_GROWTH = 2.0
# A room pass tries at most ROOM_ROOTS roots (blocked improving shifts), drawn from the
# ROOM_CANDIDATES_PER_ROOT * ROOM_ROOTS best, at most ROOM_ROOTS_PER_REQUEST per request, each
# chain with at most ROOM_PENALTY_PASSES passes. Trying every root and keeping the best chain
# was measured ("Greedy: prices, rounding and room-making"); these counts were chosen by hand.
ROOM_ROOTS = 12
ROOM_CANDIDATES_PER_ROOT = 4
ROOM_ROOTS_PER_REQUEST = 2
ROOM_PENALTY_PASSES = 15

# -- second start (regret construction) ----------------------------------------------------------

# Placements of the regret construction between two looks at the clock when a time limit is
# set. Not tuning (the answer within the limit does not depend on it); chosen by hand so that a
# look is rare next to the placements it guards.
REGRET_CLOCK_EVERY = 64
# When no regret construction repairs to feasibility, restarts with each desirability scaled by
# a log-normal factor of this spread, while the second start's budget stays above
# REGRET_RESTART_SHARE of what it began with (the rest is left for the search). With 0.3, on
# the 21 windows of 8-12 requests on 2-3 nodes (GAP families C and D, tightness 0.5-0.8) that
# both the priced and the three plain regret starts left infeasible although brute force found
# an assignment, a construction placing every request came at restart 1-35 on 20 of them and
# 137 on one (a one-off probe on the branch of issue 20); the spread and the share were chosen
# by hand, not measured against others.
REGRET_PERTURBATION_SIGMA = 0.3
REGRET_RESTART_SHARE = 0.5
# Work units (see ``Budget``) one construction is charged: an overhead plus a share per pair.
# About 250 us plus 1-2 us per request-node pair, timed once on GAP windows of 8 x 2 to
# 5,000 x 12 on the loaded 2-core machine (same probe).
REGRET_WORK = (250.0, 1.5)

# -- local search -------------------------------------------------------------------------------

# Price scales of the first price-guided searches, then random perturbations of the prices by
# a log-normal factor of this spread. Chosen by hand, not measured.
PRICE_SCALES = (1.0, 0.5, 2.0)
PRICE_PERTURBATION_SIGMA = 0.5
# Passes of priced shifts a price-guided search makes before descending. Chosen by hand.
PRICED_PASSES = 20
# Blocked first moves the pair pass tries: two instead of eight, part of the cheaper search of
# "Greedy: prices, rounding and room-making" (runs with eight on the way gave p95 2.6-4.2%).
PAIR_CANDIDATES = 2
# Requests a swap pass pairs with every other request: chosen by hand, not measured (the swap
# polish itself was: "Greedy: the memo and the final swap polish").
SWAP_MOVERS = 64
# Seconds per cell of a swap pass's (movers x requests x links) tables, to skip a pass that would
# end after the deadline (time limits only: the work budget is unchanged). Measured: 0.165 s for
# 64 x 10,000 x 24 cells (about 11 ns a cell) in greedy-thorough on a 10,000 x 12 window at load
# 0.8 (cProfile of one solve, 2026-12-06); doubled for a busier machine.
SWAP_SECONDS_PER_CELL = 2.2e-8
# Moves a pass re-checks exactly; further down the list most have gone stale. Chosen by hand.
MAX_CHECKS = 64
# Ejection chains of the final polish (``eject_pass``): the blocked improving shifts tried as
# roots, and the cheapest second moves that make each fit, each followed by a refill. The
# counts were chosen by hand, not measured against others. The chains themselves were measured
# on the tuning sets (branch of issue 20: committed windows against ``instances/bks.csv``,
# generated default-scenario seed 2 windows 0-29 against cold exact): they changed one
# committed window (099, 2.78% -> 0.59%) and one seed-2 window (000, 49.7% -> 2.3%, the
# deferral-near-zero case), and the tight GAP-style windows' mean gap by 0.02 points.
EJECT_ROOTS = 8
EJECT_SECONDS = 4

# -- iterated local search (``greedy_perturb``) ------------------------------------------------

# Requests a kick moves, cycled round by round. In the same one-off probes on the GAP-style
# tuning windows (seeds 10-19, 3 searches' budgets), (2, 3, 4) gave a mean gap of 0.74-0.78%,
# (1, 2, 3) 0.78%, (3, 4, 6) 0.64%, (4, 6, 8) 0.77%, (3, 4, 6, 8) 0.69%: within the spread of
# runs that differ only in the random draws (0.67-0.74% for the same sizes in another order),
# so the smallest were kept.
KICK_SIZES = (2, 3, 4)
# Passes of penalised moves that repair a chain kick. On two GAP-style tuning windows
# (gapc_10x3_s14, gapc_20x4_s12; chain kicks only, one search's budget) 5 passes repaired 8 of
# 8 and 4 of 8 rounds, 15 passes 8 of 8 and 2 of 5 (a failed repair spends every pass, so
# fewer rounds fit the budget); only the first found the optimum of gapc_10x3_s14: 5.
PERTURB_PENALTY_PASSES = 5
# A round's result becomes the next kick's start when within this share of the best value
# (a walk across near-equal local optima). 1% against 0 (kick the best only): GAP-style tuning
# mean 0.780% against 0.798%, not beyond the spread of the draws; chosen by hand.
PERTURB_ACCEPT = 0.01

# -- large-neighbourhood search (``greedy_lns``) ---------------------------------------------

# A round frees the requests on LNS_COLUMNS_FREED random columns with probability
# LNS_COLUMN_SHARE, else random requests; at most LNS_FREE_REQUESTS of them. On the GAP-style
# tuning windows (seeds 10-19, three searches' budgets of it after the iterated local search;
# one-off probes with the harness of ``Effort``'s notes) 14 requests gave a mean gap of 0.508%,
# 10 0.557% and 20 0.512% (at more time a round); columns only (share 1) 0.534%, random
# requests only (share 0) 0.554%; two columns 0.532%. Within the spread of the draws beyond
# the 10 requests; the three columns and the even share were chosen by hand.
LNS_COLUMN_SHARE = 0.5
LNS_COLUMNS_FREED = 3
LNS_FREE_REQUESTS = 14
# HiGHS's limits per sub-problem: branch-and-bound nodes, and simplex iterations (checked at its
# MIP interrupt points, so a step can run past it). Chosen by hand, not measured against others:
# most sub-problems of 14 requests close at the root node in tens to hundreds of iterations.
LNS_MAX_NODES = 20
LNS_MAX_ITERATIONS = 2000
# Work units one sub-problem is charged: an overhead, per nonzero of its matrix, per simplex
# iteration. A least-squares fit of the wall time of 160 sub-problems of 12 requests (GAP
# windows 20 x 4 to 100 x 10 and four committed windows, the loaded 2-core machine) gave
# 1,081 us + 3.1 us per nonzero + 68 us per iteration (median actual / fitted 0.86, p90 1.30).
LNS_WORK = (1000.0, 3.0, 65.0)
# Seconds per request-node pair that setting the sub-problems up takes (the window's MILP and its
# two sparse forms, once a window), so that a time limit skips a search it would overrun (it
# cannot stop half-way): 0.047 s at 119,427 pairs and 0.0037 s at 11,970 (median of five at
# load 0.6, a one-off probe on 2026-12-06; 0.4 us a pair), doubled for a busier machine.
LNS_SETUP_SECONDS_PER_PAIR = 8e-7
# Windows of at most this many allowed request-node pairs have their whole MILP tried first
# (same node limit, same work charge); when HiGHS proves it optimal no search runs. One-off
# probes, 2026-12-06, load about 1, first by requests: at 14 / 40 / 80 / 150 requests, GAP seeds
# 10-19 mean gap 0.471 / 0.439 / 0.404 / 0.390% (greedy median 196 / 149 / 155 / 387 ms);
# committed windows median 0.031 / - / 0.028 / 0.024%, mean time 82 / - / 95 / 137 ms; the
# 10-request windows of ``benchmarks/service_load.py``'s in-process scheduler (nodes filling up,
# the searches spending their budgets against a loose bound) median 52 / 63 / 30 / 42 ms, p90
# 294 / 99 / 49 / 75 ms. At 80 requests the heavy variant's windows of 54-80 requests took up to
# 1.2 s (HiGHS's root on 80 x 12 is not stopped by the iteration cap; per-window times of the
# held-out run 3 in docs/benchmarks.md, seed 6): by pairs instead, 300 keeps the GAP windows up
# to 50 x 5 (mean 0.404%), the scheduler's windows at median 53 ms and p90 84 ms, and on heavy
# tuning seed 12 a median of 95 ms, p90 317 ms, max 853 ms (none: 103 / 340 / 382 ms; 80
# requests: 96 / 541 / 898 ms), median gap 0.091% in all three.
LNS_WHOLE_PAIRS = 300

# -- work units (Budget) --------------------------------------------------------------------------

# A pass's tables cost an overhead plus a little per cell, a re-check a few units: set by hand
# to about a microsecond of NumPy time each; the table overhead was recalibrated from 300 to 200
# with the cheaper search of "Greedy: prices, rounding and room-making".
TABLE_WORK = 200.0
CELL_WORK = 0.06
CHECK_WORK = 10.0

# -- dual prices -----------------------------------------------------------------------------------

# The quasi-Newton method starts from the smoothed dual's curvature, damped by this fraction of
# its mean diagonal. Starting from the curvature instead of a multiple of the identity was
# measured (bounds within 0.05 points of the LP's on 90 of 100 windows, "Greedy: prices,
# rounding and room-making"); the 30% was chosen by hand, not measured against other values.
DAMPING = 0.3
# A quasi-Newton step gaining less than this (relative) counts as stalled: 1e-5 rather than
# 1e-6, about 51 evaluations per window instead of 58 at about the same accuracy (same
# section); 1e-3 or 1e-4 at the first two temperatures moved the answers on knife-edge windows
# with no consistent direction ("stopping at 0.5%...", "Rejected in one-off probes").
STALL = 1e-5
# Windows whose price matrix has at most this many entries keep it densely (float32, 4 bytes an
# entry): a product is then one matrix-vector call instead of a dozen small array operations.
# Every committed window is below it; there the dual ran 1.6x faster (median, "Greedy: the dense
# dual on small windows"), while a dense matrix of a 10,000 x 12 window took 50 MB and most of
# its first solve ("the dual without its dense matrix").
DENSE_LIMIT = 400_000

# -- rounding ------------------------------------------------------------------------------------

# Soft-min weights below this are not considered as placements, and expected node counts within
# COUNT_SLACK of an integer are not rounded up. Chosen by hand, not measured.
NEGLIGIBLE = 1e-4
COUNT_SLACK = 1e-3

# -- tiny time limits ----------------------------------------------------------------------------

# The priced start (window, dual, rounding) cannot be interrupted; it is estimated to take
# PRICED_START_S plus PRICED_START_S_PER_PAIR per request-node pair. Development probe (cProfile
# and timers around Greedy.solve on the sized windows, load average 1.4-3 on the 2-core machine):
# the dual and rounding alone 0.026 s at 12,000 pairs, 0.042 s at 36,000 and 0.15 s at 120,000
# (about 0.017 s plus 1.1 us per pair), the window 0.04 s more at 120,000; the whole start
# 0.22-0.28 s at 120,000 pairs at load 3. Rounded up. With less time left the greedy answers
# with its quick construction (greedy_quick.py).
PRICED_START_S = 0.02
PRICED_START_S_PER_PAIR = 2e-6
# Up to this many pairs the priced start runs whatever the time left: by the estimate above it
# takes at most 40 ms there, within the smallest slack of a time limit (50 ms, docs/scaling.md),
# and it gives the answer a lower bound (exact's warm start reports it).
PRICED_START_ALWAYS_PAIRS = 10_000
# The quick construction places requests in this many blocks, each priced at the congestion of
# the counts before it: more blocks spread requests better over congested nodes, each costs a
# few whole-array operations. Chosen by hand, not measured.
QUICK_BLOCKS = 32

# -- baselines -----------------------------------------------------------------------------------

# ``threshold``: the edge is good enough within this much of the best cloud quality. Chosen by
# hand, not measured.
THRESHOLD_MARGIN = 0.05

# -- numerical guards (not tuning) ---------------------------------------------------------------

TOL = 1e-9  # a load this far over its capacity still fits (floating-point sums)
IMPROVES = 1e-9  # a move must gain more than this (objective units) to count
BIG = 1e9  # stands for inf inside the dual's single-precision soft minima
TINY = 1e-12  # a unit or congestion slope below this counts as 0
# exp() of terms below e^-40 adds nothing to a soft minimum; clipping keeps exp off its slow
# underflow path
EXP_FLOOR = -40.0
UNIT_SCALE_FLOOR = 1e-6  # the smallest typical pair cost of the unit overload weights
# projected quasi-Newton: the Armijo sufficient-decrease factor (the textbook 1e-4), the
# smallest step, curvature and gradient still acted on
ARMIJO = 1e-4
MIN_STEP = 1e-10
MIN_CURVATURE = 1e-12
GRADIENT_TOL = 1e-9
