"""The bucket loop both backends share: every phase of ``plan.phases`` on every bucket, each
under the watchdog and counted with plan's closed forms. A backend supplies its few calls
(``_collective(phase, operands)``: a reduce-scatter, all-reduce, all-gather, reduce or
broadcast on a row, column or the world) and the groups; the algorithms themselves are
described once, in comm/plan.py."""
import time

from . import plan


class BucketedCommunicator:
    """Base of MpiCommunicator and NcclCommunicator. Expects ``phases``, ``layout_grid``,
    ``rank``, ``size``, ``row_name``/``row_ranks``, ``col_name``/``col_ranks``, ``watchdog``,
    ``counters_`` and ``_seq``, and a ``_collective(phase, operands)``."""

    def _run_phases(self, operands, bucket, k, nb):
        """The algorithm's phases on one bucket (``operands``: the backend's buffers)."""
        nbytes = bucket.padded * bucket.wire.itemsize
        for phase in self.phases:
            if phase.leaders_only and self.rank != self.row_ranks[0]:
                continue
            group, ranks = self._group(phase.group)
            size, group_size = plan.phase_bytes(phase, nbytes, self.layout_grid)
            self._call(phase.name, group, ranks, k, nb,
                       lambda p=phase: self._collective(p, operands),
                       phase.collective, size, group_size)

    def _group(self, kind):
        """(name, world ranks) of this rank's row, column or the world."""
        if kind == "row":
            return self.row_name, self.row_ranks
        if kind == "col":
            return self.col_name, self.col_ranks
        return "world", list(range(self.size))

    def _call(self, phase, group, ranks, k, nb, fn, kind=None, nbytes=0, group_size=1):
        """Run one blocking call under the watchdog and count it (bytes and ring steps of a
        bandwidth-optimal ``kind`` collective on ``nbytes``: plan.collective_bytes)."""
        self.watchdog.arm(phase, group, ranks, self._seq, k, nb)
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        self.watchdog.disarm()
        steps = plan.collective_steps(kind, group_size) if kind else 0
        nbytes = plan.collective_bytes(kind, nbytes, group_size) if kind else 0
        self.counters_.add(phase, dt, nbytes=nbytes, steps=steps)

    def counters(self):
        return self.counters_.snapshot()
