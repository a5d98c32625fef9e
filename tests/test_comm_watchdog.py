"""comm/watchdog.py in one process: the deadline fires, the diagnosis names the culprit."""
import threading
import time

import numpy as np

from comm.plan import PHASE_NAMES
from comm.watchdog import ARMED, BEAT, BUCKET, FIELDS, PHASE, SEQ, ProgressBoard, Watchdog


class Aborted:
    def __init__(self):
        self.codes = []
        self.event = threading.Event()

    def __call__(self, code):
        self.codes.append(code)
        self.event.set()


def watchdog(*args, **kwargs):
    dog = Watchdog(*args, **kwargs)
    dog._exit = lambda code: None      # the real one ends the process after MPI_Abort
    return dog


def test_a_collective_that_waits_too_long_aborts_with_one_line(capsys):
    aborted = Aborted()
    dog = watchdog(3, 0.3, aborted)
    t0 = time.monotonic()
    dog.arm("ar_col", "col1", [1, 3], seq=7, bucket=2, buckets=5)
    assert aborted.event.wait(5), "the watchdog never fired"
    assert aborted.codes == [1] and time.monotonic() - t0 < 0.3 + 1.5
    line = capsys.readouterr().err.strip()
    assert "\n" not in line
    assert line.startswith("comm watchdog: rank 3 ") and "ar_col of collective call #7" in line
    assert "(bucket 3/5) on group col1 = ranks [1, 3]" in line and "aborting the job" in line


def test_calls_that_finish_in_time_never_fire():
    aborted = Aborted()
    dog = watchdog(0, 0.3, aborted)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        dog.arm("rs_row", "row0", [0, 1], seq=1)
        time.sleep(0.01)
        dog.disarm()
    time.sleep(0.5)
    dog.close()
    assert aborted.codes == []


def test_timeout_zero_starts_no_thread():
    dog = watchdog(0, 0, Aborted())
    assert dog._thread is None


def test_diagnosis_tells_a_frozen_rank_from_one_that_is_behind():
    records = np.zeros((4, FIELDS), np.int64)
    board = ProgressBoard(records, {0: 0, 1: 1, 2: 2, 3: 3}, 0)
    dog = watchdog(0, 0, Aborted(), board)
    now_ms = int(time.time() * 1000)
    code = PHASE_NAMES.index
    records[1] = (7, 0, code("rs_row"), 1, now_ms - 60_000)     # silent for a minute
    records[2] = (6, 4, code("ag_row"), 0, now_ms)              # alive, still computing
    records[3] = (7, 0, code("rs_row"), 1, now_ms)              # waiting with us
    dog.arm("rs_row", "world", [0, 1, 2, 3], seq=7, bucket=0, buckets=5)
    text = dog.diagnosis(dog._armed)
    assert "rank 1 (not responding: no heartbeat for 60" in text
    assert "rank 2 (not in this collective: computing after ag_row of call #6 bucket 5)" in text
    assert "rank 3" not in text
    assert records[0][SEQ] == 7 and records[0][ARMED] == 1 and records[0][PHASE] == code("rs_row")
    dog.disarm()
    assert records[0][ARMED] == 0 and records[0][BUCKET] == 0 and records[0][BEAT] > 0


def test_ranks_on_other_nodes_are_reported_as_unknown():
    dog = watchdog(0, 0, Aborted())      # a private board: sees only itself
    dog.arm("ar_col", "col0", [0, 8, 16], seq=1)
    assert "ranks [8, 16] on other nodes (state not visible here)" in dog.diagnosis(dog._armed)
