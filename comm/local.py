"""The communicator of a job with one process: every collective is the identity."""


class LocalCommunicator:
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    grid = (1, 1)
    algorithm = "local"

    def all_reduce(self, arrays, average=False):
        return arrays

    def bcast(self, arrays, root=0):
        return arrays

    def barrier(self):
        pass

    def abort(self, message):
        raise SystemExit(message)

    def counters(self):
        return {"calls": 0, "bytes": 0, "seconds": 0.0}
