"""How precise a success rate measured on a few episodes is: the Wilson score interval.

A held-out success rate of 80% on 15 episodes is anything from about 55% to 93%; the figures
that choose or ship a model are printed with their interval so a reader does not take a
difference of one or two episodes for a difference between models. Wilson's interval (not the
normal approximation) stays inside [0, 1] and is usable at 0 and n successes.
"""
import math

Z_95 = 1.959964   # the standard normal quantile of a two-sided 95% interval


def wilson_interval(successes, n, z=Z_95):
    """The (low, high) interval of a binomial rate with ``successes`` of ``n`` trials; (nan,
    nan) for n = 0."""
    n = int(n)
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f'{successes} successes of {n} trials')
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_interval(rate, n, z=Z_95):
    """:func:`wilson_interval` of a rate measured on ``n`` trials (the count of successes is
    the rate times n, rounded)."""
    return wilson_interval(int(round(float(rate) * int(n))), n, z)


def percent_with_interval(rate, n):
    """``'80.0% (55-93%)'``: a rate on ``n`` trials and its 95% interval, in percent (the rate
    alone when n is unknown or 0)."""
    if not n:
        return f'{100 * rate:.1f}%'
    low, high = rate_interval(rate, n)
    return f'{100 * rate:.1f}% ({100 * low:.0f}-{100 * high:.0f}%)'
