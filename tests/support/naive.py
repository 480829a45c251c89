"""An independent, deliberately naive recomputation of a position from its fills."""

from __future__ import annotations

from fractions import Fraction

from pm_streams.domain import Fill


def naive(fills: list[Fill]) -> tuple[Fraction, Fraction, Fraction, Fraction]:
    """Average-cost accounting written out long-hand over exact fractions.

    Keeps the cost basis (not the average) and splits every fill into a closing part and
    an opening part, so it shares no code path with the engine.
    """
    size = basis = realized = paid = Fraction(0)  # basis = Σ entry price·|qty| still open
    for f in fills:
        q, p, fee = Fraction(f.quantity), Fraction(f.price), Fraction(f.fee)
        paid += fee
        realized -= fee  # every fee is charged when paid (SPEC §4.1 rev 2), funding too
        if f.is_funding:
            continue
        closing = Fraction(0)
        if size * q < 0:
            closing = min(abs(q), abs(size))
        opening = abs(q) - closing
        if closing:
            avg = basis / abs(size)
            direction = 1 if size > 0 else -1
            realized += (p - avg) * closing * direction
            basis -= avg * closing
            size += closing * (1 if q > 0 else -1)
        if opening:
            basis += p * opening
            size += opening * (1 if q > 0 else -1)
        if size == 0:
            basis = Fraction(0)
    avg = basis / abs(size) if size else Fraction(0)
    return size, avg, realized, paid
