/* Page-fault tracer for the agent: which Python code touches pages the process never touched.
 *
 * Installed as a hook in front of CPython's object and memory allocators. After start(), each
 * allocation first compares the process's minor-fault count (getrusage) with the last one; a
 * fault since then (a new page, in CPython's small-object allocator or elsewhere) is written
 * to the output file with the RSS in pages and the Python stack at that moment. A page is
 * usually first written by the code that just allocated, so the stack names who touched it.
 *
 * A diagnostic, not part of the agent: see trace_pagefaults.py for how to build and run it.
 * The tracer itself allocates when it writes a stack, so it disturbs what it measures a little.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static PyMemAllocatorEx orig_obj, orig_mem;
static int tracing, busy, statm = -1;
static long last_faults;
static FILE *out;
static double t0;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long faults(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static long rss_pages(void) {
    char buf[128];
    long size = 0, resident = -1;
    ssize_t n = pread(statm, buf, sizeof buf - 1, 0);
    if (n > 0) {
        buf[n] = 0;
        sscanf(buf, "%ld %ld", &size, &resident);
    }
    return resident;
}

static void check(size_t size) {
    if (!tracing || busy) return;
    long f = faults();
    if (f == last_faults) return;
    busy = 1; /* what the stack walk allocates goes straight through */
    fprintf(out, "%.2f faults+%ld rss_pages=%ld alloc=%zu:", now() - t0, f - last_faults,
            rss_pages(), size);
    PyThreadState *ts = PyThreadState_Get();
    PyFrameObject *frame = ts ? PyThreadState_GetFrame(ts) : NULL;
    for (int depth = 0; frame && depth < 10; depth++) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        const char *file = PyUnicode_AsUTF8(code->co_filename);
        const char *name = PyUnicode_AsUTF8(code->co_name);
        const char *base = file ? strrchr(file, '/') : NULL;
        fprintf(out, " %s:%s:%d", base ? base + 1 : (file ? file : "?"), name ? name : "?",
                PyFrame_GetLineNumber(frame));
        Py_DECREF(code);
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    fputc('\n', out);
    fflush(out);
    last_faults = faults();
    busy = 0;
}

#define HOOKS(PREFIX, ORIG)                                                                    \
    static void *PREFIX##_malloc(void *ctx, size_t n) {                                        \
        check(n);                                                                              \
        return ORIG.malloc(ORIG.ctx, n);                                                       \
    }                                                                                          \
    static void *PREFIX##_calloc(void *ctx, size_t e, size_t n) {                              \
        check(e * n);                                                                          \
        return ORIG.calloc(ORIG.ctx, e, n);                                                    \
    }                                                                                          \
    static void *PREFIX##_realloc(void *ctx, void *p, size_t n) {                              \
        check(n);                                                                              \
        return ORIG.realloc(ORIG.ctx, p, n);                                                   \
    }                                                                                          \
    static void PREFIX##_free(void *ctx, void *p) { ORIG.free(ORIG.ctx, p); }

HOOKS(obj, orig_obj)
HOOKS(mem, orig_mem)

static PyObject *install(PyObject *self, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path)) return NULL;
    out = fopen(path, "w");
    if (!out) return PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
    statm = open("/proc/self/statm", O_RDONLY);
    t0 = now();
    PyMemAllocatorEx o = {NULL, obj_malloc, obj_calloc, obj_realloc, obj_free};
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &orig_obj);
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &o);
    PyMemAllocatorEx m = {NULL, mem_malloc, mem_calloc, mem_realloc, mem_free};
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &orig_mem);
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &m);
    Py_RETURN_NONE;
}

static PyObject *start(PyObject *self, PyObject *unused) {
    last_faults = faults();
    tracing = 1;
    fprintf(out, "%.2f start rss_pages=%ld\n", now() - t0, rss_pages());
    fflush(out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install", install, METH_VARARGS, "install(path): hook the allocators, write to path"},
    {"start", start, METH_NOARGS, "start(): report every new page from now on"},
    {NULL, NULL, 0, NULL},
};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pagefaults", NULL, -1, methods};
PyMODINIT_FUNC PyInit_pagefaults(void) { return PyModule_Create(&module); }
