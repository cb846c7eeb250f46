"""Arrival rates of the localizer's inputs, as diagnostic_updater's frequency status reports
them (pure Python)."""
from collections import deque


class RateMonitor:
    """The rate (Hz) of events over the last ``window_s`` seconds of a clock. A clock going
    backwards (a bag looped under sim time) starts the window again."""

    def __init__(self, window_s=5.0, max_events=10_000):
        self.window_s = float(window_s)
        self.times = deque(maxlen=max_events)

    def tick(self, now):
        if self.times and now < self.times[-1]:
            self.times.clear()
        self.times.append(float(now))

    def rate(self, now):
        """Events per second in ``(now - window_s, now]``: (count - 1) over the span between
        the first and the last, 0 with fewer than two."""
        while self.times and self.times[0] <= now - self.window_s:
            self.times.popleft()
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


__all__ = ['RateMonitor']
