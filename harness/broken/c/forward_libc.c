/* Not an allocator: every call goes to glibc's own malloc through the names glibc
 * exports for it (__libc_malloc and friends). For harness/tests/grader.rs: the
 * grader must see that the blocks come from glibc's heap and give no points.
 *
 * Build: gcc -shared -fPIC -O2 forward_libc.c -o libforward_libc.so */
#include <errno.h>
#include <stddef.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

void *malloc(size_t n) { return __libc_malloc(n); }
void free(void *p) { __libc_free(p); }
void *calloc(size_t c, size_t n) { return __libc_calloc(c, n); }
void *realloc(void *p, size_t n) { return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) {
    if (!a || (a & (a - 1))) {
        errno = EINVAL;
        return NULL;
    }
    return __libc_memalign(a, n);
}
int posix_memalign(void **out, size_t a, size_t n) {
    if (!a || (a & (a - 1)) || a % sizeof(void *))
        return EINVAL;
    void *p = __libc_memalign(a, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
