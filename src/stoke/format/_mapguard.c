/* A SIGBUS guard for memory-mapped shards: a page that vanished from under a mapping reads as zeros.
 *
 * Why by hand: when a mapped file is truncated in place (rsync --inplace, cp over it, a change on the NFS
 * server), the kernel sends SIGBUS to the thread that touches a page past the new end of file. The
 * touching code is a decoder (libjpeg-turbo, OpenCV, numpy, xxhash, stoke's resize kernel) reading the
 * mapping directly, and Python cannot turn a signal into an exception: the process dies. Here the handler
 * maps one anonymous zero page over the faulting page, marks the mapping as having lost pages and returns,
 * so the instruction runs again on zeros. stoke.format.mapguard checks the mark after each sample has been
 * used and raises an error naming the shard: the zeros never reach a batch.
 *
 * Only faults the kernel raised (BUS_ADRERR) inside a registered range are taken. Anything else (a fault
 * elsewhere, a machine-check error, a SIGBUS sent with kill) restores the handler that was there before
 * this one and delivers the signal to it again, so a real crash still crashes, through faulthandler's
 * traceback when it is enabled. The previous handler is never called as a function: it runs as the
 * installed handler (the faulting instruction runs again, or the sent signal is raised again), as
 * faulthandler itself does, so no chain of handlers can loop back here.
 *
 * Threads: the Loader's workers fault concurrently, so the handler only reads a fixed table (a range's
 * start is published after its end, and read twice around the end) and sets flags with atomic stores.
 * register() and unregister() are called with the GIL held, one at a time. A forked child inherits the
 * handler, the table and the mappings: all stay consistent.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SLOTS 65536 /* mappings guarded at once; slot 0 is never a range: marks[0] says "any range lost pages" */

typedef struct {
    uintptr_t start; /* 0 while the slot is free */
    uintptr_t end;   /* one past the last byte, rounded up to a page */
} Range;

static Range ranges[SLOTS];
static unsigned char marks[SLOTS]; /* marks[slot]: that range lost pages; marks[0]: some range did */
static int high = 1;               /* slots at or above this have never been used */
static uintptr_t page_size;
static struct sigaction previous; /* what SIGBUS did before install(); written before the handler is installed */

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

/* Whether registered slot ``slot`` holds ``address``. Reads the start twice, so that a slot being reused
 * while this runs never pairs one range's start with another's end. */
static int holds(int slot, uintptr_t address) {
    uintptr_t start = LOAD(ranges[slot].start);
    if (start == 0 || address < start) return 0;
    uintptr_t end = LOAD(ranges[slot].end);
    return address < end && LOAD(ranges[slot].start) == start;
}

static void on_sigbus(int signum, siginfo_t *info, void *context) {
    int saved_errno = errno;
    if (info != NULL && info->si_code == BUS_ADRERR) {
        uintptr_t address = (uintptr_t)info->si_addr;
        int top = LOAD(high), found = 0;
        for (int slot = 1; slot < top && !found; slot++) found = holds(slot, address);
        if (found) {
            void *page = (void *)(address & ~(page_size - 1));
            /* Replaces only this page of the file mapping; munmap of the whole mapping removes it too. */
            if (mmap(page, page_size, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED) {
                /* Every slot holding the page: a mapping closed a moment ago at the same address may not
                 * have been unregistered yet, and the new one must not miss its mark. */
                for (int slot = 1; slot < top; slot++)
                    if (holds(slot, address)) STORE(marks[slot], 1);
                STORE(marks[0], 1);
                errno = saved_errno;
                return; /* the faulting instruction runs again and reads zeros */
            }
        }
    }
    int sent = info == NULL || info->si_code <= 0;
    if (sent && !(previous.sa_flags & SA_SIGINFO) && previous.sa_handler == SIG_IGN) {
        errno = saved_errno;
        return; /* a SIGBUS sent to a process that ignored SIGBUS before: still ignored */
    }
    /* Not ours: the previous handler takes over, as if this one had never been installed. */
    sigaction(SIGBUS, &previous, NULL);
    if (sent) {
        /* Sent (kill, raise): deliver it again. It is blocked while this handler runs, so it arrives, to
         * the restored handler, as soon as this one returns. */
        raise(signum);
    }
    /* Raised by the kernel: returning runs the faulting instruction again, which faults again, into the
     * restored handler (or the default action, which ends the process with SIGBUS). */
    errno = saved_errno;
}

static int ours(const struct sigaction *action) {
    return (action->sa_flags & SA_SIGINFO) && action->sa_sigaction == on_sigbus;
}

static PyObject *handler_state(PyObject *self, PyObject *unused) {
    struct sigaction current;
    if (sigaction(SIGBUS, NULL, &current) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    if (ours(&current)) return PyUnicode_FromString("stoke");
    if (!(current.sa_flags & SA_SIGINFO) && (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN))
        return PyUnicode_FromString("default");
    return PyUnicode_FromString("other");
}

static PyObject *install(PyObject *self, PyObject *unused) {
    struct sigaction current, action;
    if (sigaction(SIGBUS, NULL, &current) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    if (ours(&current)) Py_RETURN_NONE; /* already first: never chain to ourselves */
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK; /* faulthandler's alternate stack, where a thread has one */
    sigemptyset(&action.sa_mask);
    /* `previous` is read by the handler only after it is installed; set it first. A fault between the two
     * sigaction calls would run the handler with the previous action's copy already in place. */
    previous = current;
    if (sigaction(SIGBUS, &action, &current) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    if (!ours(&current)) previous = current; /* changed in between (another thread of C code): keep the newest */
    Py_RETURN_NONE;
}

static PyObject *register_mapping(PyObject *self, PyObject *mapping) {
    Py_buffer view;
    if (PyObject_GetBuffer(mapping, &view, PyBUF_SIMPLE) != 0) return NULL;
    uintptr_t start = (uintptr_t)view.buf, length = (uintptr_t)view.len;
    PyBuffer_Release(&view); /* no export is kept: the mapping can still be closed */
    if (start == 0 || length == 0) return PyLong_FromLong(0);
    int slot = 1;
    while (slot < high && LOAD(ranges[slot].start) != 0) slot++;
    if (slot == SLOTS) return PyLong_FromLong(0); /* full: the caller falls back to checking the file's size */
    STORE(marks[slot], 0);
    STORE(ranges[slot].end, (start + length + page_size - 1) & ~(page_size - 1));
    STORE(ranges[slot].start, start); /* published last: the handler reads start first */
    if (slot == high) STORE(high, slot + 1);
    return PyLong_FromLong(slot);
}

static PyObject *unregister_mapping(PyObject *self, PyObject *argument) {
    long slot = PyLong_AsLong(argument);
    if (slot == -1 && PyErr_Occurred()) return NULL;
    if (slot <= 0 || slot >= SLOTS) {
        PyErr_Format(PyExc_ValueError, "no mapping guard slot %ld", slot);
        return NULL;
    }
    STORE(ranges[slot].start, (uintptr_t)0);
    STORE(ranges[slot].end, (uintptr_t)0);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install", install, METH_NOARGS, "Install the SIGBUS handler first in line (a no-op when it already is)."},
    {"handler_state", handler_state, METH_NOARGS,
     "Who handles SIGBUS now: 'stoke', 'default' (the default action or ignored) or 'other'."},
    {"register", register_mapping, METH_O,
     "Guard the memory of a buffer (an mmap); returns its slot in `marks`, or 0 when the table is full."},
    {"unregister", unregister_mapping, METH_O, "Stop guarding the mapping in this slot (before it is unmapped)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mapguard", "SIGBUS guard for memory-mapped shards.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__mapguard(void) {
    page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
    PyObject *created = PyModule_Create(&module);
    if (created == NULL) return NULL;
    /* Read-only bytes over the flags: Python reads a flag for the cost of an index. */
    PyObject *view = PyMemoryView_FromMemory((char *)marks, SLOTS, PyBUF_READ);
    if (view == NULL || PyModule_AddObject(created, "marks", view) != 0) {
        Py_XDECREF(view);
        Py_DECREF(created);
        return NULL;
    }
    if (PyModule_AddIntConstant(created, "SLOTS", SLOTS) != 0) {
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
