"""No silent hangs: a deadline around every blocking collective, and a one-line diagnosis.

The communicator ``arm``s the watchdog before each blocking call and ``disarm``s it after;
that is two attribute writes, so it costs nothing measurable. A daemon thread wakes every
``tick`` seconds; if the armed call has waited longer than ``timeout_s`` it prints one line
naming this rank, the phase, the group and the ranks it is waiting on, then aborts the job
(``MPI_Abort``), so ``mpirun`` exits non-zero instead of hanging until the wall-clock limit.

Which ranks is it waiting on? A blocking collective cannot say, so every rank also publishes
where it is (collective call number, bucket, phase) and a heartbeat from this thread in a small
node-shared memory window (``ProgressBoard``). A member of the group whose heartbeat is stale
is frozen or dead; one whose position is behind ours has not reached this collective yet.
Ranks on other nodes are not visible there and are reported as "state unknown".
"""
import os
import sys
import threading
import time

import numpy as np

from .plan import PHASE_NAMES, describe

# record fields: collective call number, bucket, phase code, armed (0/1), heartbeat (ms, wall clock)
SEQ, BUCKET, PHASE, ARMED, BEAT = range(5)
FIELDS = 5


class ProgressBoard:
    """One int64 record per rank of this node, in memory every rank of the node can read."""

    def __init__(self, records, slot_of_rank, my_rank):
        self.records = records            # (ranks on this node, FIELDS) int64 view
        self.slot_of_rank = slot_of_rank  # world rank -> row in ``records`` (same node only)
        self.mine = records[slot_of_rank[my_rank]]

    @classmethod
    def local(cls, rank):
        """A board that only this process can see (no node-shared memory available)."""
        return cls(np.zeros((1, FIELDS), np.int64), {rank: 0}, rank)

    def beat(self):
        self.mine[BEAT] = int(time.time() * 1000)

    def where(self, rank):
        slot = self.slot_of_rank.get(rank)
        return None if slot is None else self.records[slot].copy()


class Watchdog:
    def __init__(self, rank, timeout_s, abort, board=None, phase_names=PHASE_NAMES, host=None):
        self.rank = rank
        self.timeout_s = float(timeout_s)
        self.abort = abort                       # abort(exit_code): never returns
        self.board = board or ProgressBoard.local(rank)
        self.phase_names = list(phase_names)
        self.host = host or os.uname().nodename
        self.tick = min(1.0, max(0.05, self.timeout_s / 4))
        self.stale_s = 2 * self.tick + 0.5       # no heartbeat for this long: not responding
        self.grace_s = min(2.0, max(0.2, self.timeout_s / 5))  # let other ranks print too
        self._armed = None                       # (start, phase, group name, ranks, seq, bucket, n)
        self._stop = threading.Event()
        self.board.beat()
        self._thread = None
        if self.timeout_s > 0:
            self._thread = threading.Thread(target=self._run, name="comm-watchdog", daemon=True)
            self._thread.start()

    # --- called by the communicator around every blocking call ------------------------------
    def arm(self, phase, group, ranks, seq, bucket=0, buckets=1):
        mine = self.board.mine
        mine[SEQ], mine[BUCKET], mine[PHASE], mine[ARMED] = seq, bucket, self._code(phase), 1
        self._armed = (time.monotonic(), phase, group, ranks, seq, bucket, buckets)

    def disarm(self):
        self._armed = None
        self.board.mine[ARMED] = 0

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.tick + 1)

    # --- the thread ---------------------------------------------------------------------------
    def _code(self, phase):
        if phase not in self.phase_names:
            self.phase_names.append(phase)
        return self.phase_names.index(phase)

    def _run(self):
        while not self._stop.wait(self.tick):
            self.board.beat()
            armed = self._armed
            if armed is not None and time.monotonic() - armed[0] > self.timeout_s:
                self._fire(armed)
                return

    def _fire(self, armed):
        print(self.diagnosis(armed), file=sys.stderr, flush=True)
        time.sleep(self.grace_s)
        self.abort(1)
        self._exit(1)      # only reached if abort returned

    _exit = staticmethod(os._exit)   # tests replace it to survive a firing

    def diagnosis(self, armed):
        start, phase, group, ranks, seq, bucket, buckets = armed
        waited = time.monotonic() - start
        return (f"comm watchdog: rank {self.rank} ({self.host}) waited {waited:.1f} s "
                f"(comm.timeout_s={self.timeout_s:g}) in {phase} of collective call #{seq} "
                f"(bucket {bucket + 1}/{buckets}) on group {group} = ranks {describe(ranks)}; "
                f"{self._waiting_on(ranks, seq, bucket, phase)}; aborting the job")

    def _waiting_on(self, ranks, seq, bucket, phase):
        now_ms = time.time() * 1000
        mine = (seq, bucket, self._code(phase))
        frozen, behind, unknown = [], [], []   # the last is for ranks on other nodes
        for r in ranks:
            if r == self.rank:
                continue
            rec = self.board.where(r)
            if rec is None:
                unknown.append(r)
            elif now_ms - rec[BEAT] > self.stale_s * 1000:
                frozen.append(f"rank {r} (not responding: no heartbeat for "
                              f"{(now_ms - rec[BEAT]) / 1000:.1f} s, frozen or dead; last seen "
                              f"{self._name(rec)})")
            elif (rec[SEQ], rec[BUCKET], rec[PHASE]) != mine or not rec[ARMED]:
                behind.append(f"rank {r} (not in this collective: {self._name(rec)})")
        if unknown:
            frozen.append(f"ranks {describe(unknown)} on other nodes (state not visible here)")
        if not frozen + behind:
            return "every other member on this node is in the same call (a network problem?)"
        return "waiting on " + ", ".join(frozen + behind)

    def _name(self, rec):
        code = int(rec[PHASE])
        phase = self.phase_names[code] if code < len(self.phase_names) else f"phase {code}"
        where = f"{phase} of call #{rec[SEQ]} bucket {rec[BUCKET] + 1}"
        return f"in {where}" if rec[ARMED] else f"computing after {where}"
