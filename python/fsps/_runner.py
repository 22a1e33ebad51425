"""Runs a client's blocking libfsps calls on a thread of its own, so that
the caller waits in Python, where Ctrl-C (SIGINT) reaches it.

cffi releases the GIL around every C call, so other Python threads run
meanwhile; but a signal is only handled between Python bytecodes of the
main thread, and a C call that waits on the network (a gather parked until
the other workers' pushes) can take up to the client's timeout. The
runner's thread makes the call; the caller waits on a lock, which SIGINT
interrupts.
"""
import queue
import threading


class Runner:
    """One daemon thread executing calls in order, one at a time."""

    def __init__(self, name):
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name,
                                        daemon=True)
        self._thread.start()
        self.busy = False

    def _main(self):
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._run(*job)
            # Dropped here, not when the next job comes: a call's arrays
            # are its caller's again once it returned.
            del job

    def _run(self, fn, args, box, done):
        try:
            box.append(fn(*args))
        except BaseException as e:  # handed to the caller
            box.append(e)
            box.append(None)
        self.busy = False
        if done.locked():
            done.release()

    def call(self, fn, *args):
        """Returns fn(*args), run on the runner's thread. A
        KeyboardInterrupt while waiting propagates at once; the call
        itself goes on to its end (``busy`` stays True until then):
        what must follow it goes through ``post``."""
        done = threading.Lock()
        done.acquire()
        box = []
        self.busy = True
        self._jobs.put((fn, args, box, done))
        done.acquire()  # interruptible by SIGINT in the main thread
        if len(box) == 2:
            raise box[0]
        return box[0]

    def post(self, fn, *args):
        """Queues fn(*args) behind the call in progress, without waiting."""
        self._jobs.put((fn, args, [], threading.Lock()))

    def stop(self):
        self._jobs.put(None)
