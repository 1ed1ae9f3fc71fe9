/* Not an allocator: every call goes to the next definition in the search order,
 * glibc's, found with dlsym(RTLD_NEXT, ...). For harness/tests/grader.rs: the grader
 * must see that the blocks come from glibc's heap and give no points.
 *
 * dlsym itself may call calloc before the real one is known: those few early calls
 * are served from a static buffer that is never freed.
 *
 * Build: gcc -shared -fPIC -O2 forward_dlsym.c -o libforward_dlsym.so -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>

static void *(*next_malloc)(size_t);
static void (*next_free)(void *);
static void *(*next_calloc)(size_t, size_t);
static void *(*next_realloc)(void *, size_t);
static int (*next_posix_memalign)(void **, size_t, size_t);
static void *(*next_aligned_alloc)(size_t, size_t);
static void *(*next_memalign)(size_t, size_t);

static _Alignas(16) char early[4096];
static size_t early_used;
static int resolving;

static void resolve(void) {
    if (next_malloc || resolving)
        return;
    resolving = 1;
    next_calloc = dlsym(RTLD_NEXT, "calloc");
    next_free = dlsym(RTLD_NEXT, "free");
    next_realloc = dlsym(RTLD_NEXT, "realloc");
    next_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    next_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    next_memalign = dlsym(RTLD_NEXT, "memalign");
    next_malloc = dlsym(RTLD_NEXT, "malloc");
    resolving = 0;
}

static int is_early(void *p) { return (char *)p >= early && (char *)p < early + sizeof early; }

void *malloc(size_t n) {
    resolve();
    if (!next_malloc) {
        void *p = early + early_used;
        early_used += (n + 15) & ~(size_t)15;
        return early_used <= sizeof early ? p : NULL;
    }
    return next_malloc(n);
}
void *calloc(size_t c, size_t n) {
    resolve();
    if (!next_calloc)
        return malloc(c * n); /* the static buffer is zero */
    return next_calloc(c, n);
}
void free(void *p) {
    if (!p || is_early(p))
        return;
    resolve();
    next_free(p);
}
void *realloc(void *p, size_t n) {
    resolve();
    return next_realloc(p, n);
}
int posix_memalign(void **out, size_t a, size_t n) {
    resolve();
    return next_posix_memalign(out, a, n);
}
void *aligned_alloc(size_t a, size_t n) {
    resolve();
    return next_aligned_alloc(a, n);
}
void *memalign(size_t a, size_t n) {
    resolve();
    return next_memalign(a, n);
}
