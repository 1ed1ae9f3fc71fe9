/*
 * mymalloc.c: your allocator, in C.
 *
 * `make` builds libmymalloc.so; `harness check --phase N .` tests it (see the handout
 * in the book). The chapters explain the ideas with Rust code; the steps are the same.
 *
 * This file is in two parts.
 *
 * 1. YOUR POLICY (mm_*): how blocks are laid out, found, split and merged. Each
 *    function to write is marked with the chapter and step that explain it. Until you
 *    write it, it says so on stderr (once) and fails safely: mm_alloc returns NULL.
 *
 * 2. THE C FUNCTIONS (given): malloc, free, calloc, realloc and the rest of the family,
 *    glibc's __libc_* names, the lock and fork. In Rust, preload-kit does all of this
 *    for you; here it is written out, and each function states the contract it keeps:
 *    - sizes: count * size and size + header must not wrap (calloc, reallocarray and
 *      your mm_alloc check with __builtin_*_overflow); a failure is NULL + ENOMEM;
 *    - errno: set to ENOMEM on every failed allocation; free never changes it;
 *    - alignment: posix_memalign and aligned_alloc reject an alignment that is not a
 *      power of two (EINVAL), and mm_alloc gets only powers of two of at least 16;
 *    - the lock: one mutex around every call into the policy, because programs call
 *      malloc from many threads; the policy never calls malloc itself (not even
 *      printf: it allocates);
 *    - fork: the lock is held across fork() (pthread_atfork), so the child never
 *      inherits a heap that another thread was changing halfway.
 *    - misuse: a pointer this heap never gave out is reported on one line and the
 *      process exits 2; a double free or a broken header, exit 3 (report()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MIN_ALIGN 16
#define EXIT_MISUSE 2
#define EXIT_CORRUPTION 3

/* One line on stderr, formatted on the stack (snprintf with no %f does not allocate in
 * glibc), then _exit(code): the heap cannot be trusted to run atexit handlers. */
static void report(int code, const char *format, ...)
{
    char line[256];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(line, sizeof line - 1, format, args);
    va_end(args);
    if (length < 0)
        length = 0;
    if (length > (int)sizeof line - 2)
        length = sizeof line - 2;
    line[length] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, length + 1);
    (void)ignored;
    _exit(code);
}

/* Says once per process that a step is not written yet. */
static void not_written(int *said, const char *what)
{
    if (!*said) {
        *said = 1;
        ssize_t ignored = write(STDERR_FILENO, what, strlen(what));
        (void)ignored;
    }
}

/* ===================== 1. YOUR POLICY ===================== */

/* Chapter 1, step 1 ("Blocks and their headers") and step 2 ("The program break"):
 * a block of at least `size` bytes whose address is a multiple of `align` (a power
 * of two, at least 16), from the free list (step 4, "First fit") or from the top of
 * the heap (sbrk). NULL when memory is exhausted or `size` + your header would wrap.
 * The caller sets errno. */
static void *mm_alloc(size_t size, size_t align)
{
    static int said;
    (void)size;
    (void)align;
    not_written(&said, "my-malloc: chapter 1, step 1 is not written yet: mm_alloc in mymalloc.c "
                       "(see \"Blocks and their headers\")\n");
    return NULL;
}

/* Chapter 1, step 3 ("The free list"): release the block at `p` (not NULL). Check it
 * first: report(EXIT_MISUSE, "error: invalid pointer %p passed to free (...)", p) when
 * this heap never gave it out, report(EXIT_CORRUPTION, "error: double free detected at
 * %p", p) when it is already free. Until written: the block is never freed. */
static void mm_free(void *p)
{
    static int said;
    (void)p;
    not_written(&said, "my-malloc: chapter 1, step 3 is not written yet: mm_free in mymalloc.c "
                       "(see \"The free list\"); until then, no block is ever freed\n");
}

/* The bytes the program may use at `p`, a block this heap gave out (check it as
 * mm_free does). Used by realloc and malloc_usable_size. */
static size_t mm_usable_size(void *p)
{
    report(EXIT_MISUSE, "my-malloc: mm_usable_size in mymalloc.c is not written yet "
                        "(chapter 1, \"Blocks and their headers\"); called for %p", p);
    return 0;
}

/* Chapter 2, step 4 ("realloc in place"): resize the used block `p` to `size` bytes
 * without moving it; 1 if it now holds `size` bytes, 0 to let realloc move it.
 * Until written: 0. */
static int mm_resize_in_place(void *p, size_t size)
{
    (void)p;
    (void)size;
    return 0;
}

/* Chapter 1, step 5: check every invariant of the heap; 0 if it is sound. heap_check()
 * calls it. Until written: 0. */
static int mm_check(void)
{
    return 0;
}

/* ===================== 2. THE C FUNCTIONS (given) ===================== */

static pthread_mutex_t heap_lock = PTHREAD_MUTEX_INITIALIZER;

static void lock_before_fork(void) { pthread_mutex_lock(&heap_lock); }
static void unlock_after_fork(void) { pthread_mutex_unlock(&heap_lock); }
static void reset_in_child(void) { pthread_mutex_init(&heap_lock, NULL); }

__attribute__((constructor)) static void install_fork_handlers(void)
{
    pthread_atfork(lock_before_fork, unlock_after_fork, reset_in_child);
}

static void *allocate(size_t size, size_t align)
{
    pthread_mutex_lock(&heap_lock);
    void *p = mm_alloc(size, align);
    pthread_mutex_unlock(&heap_lock);
    if (p == NULL)
        errno = ENOMEM;
    return p;
}

void *malloc(size_t size) { return allocate(size, MIN_ALIGN); }

void free(void *p)
{
    if (p == NULL)
        return;
    int saved = errno;
    pthread_mutex_lock(&heap_lock);
    mm_free(p);
    pthread_mutex_unlock(&heap_lock);
    errno = saved;
}

void *calloc(size_t count, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = allocate(total, MIN_ALIGN);
    if (p != NULL)
        memset(p, 0, total);
    return p;
}

void *realloc(void *p, size_t size)
{
    if (p == NULL)
        return malloc(size);
    if (size == 0) { /* glibc's choice: free, and return NULL */
        free(p);
        return NULL;
    }
    pthread_mutex_lock(&heap_lock);
    size_t old = mm_usable_size(p);
    int in_place = mm_resize_in_place(p, size);
    pthread_mutex_unlock(&heap_lock);
    if (in_place)
        return p;
    void *moved = malloc(size);
    if (moved == NULL)
        return NULL; /* errno is ENOMEM; the old block is untouched */
    memcpy(moved, p, old < size ? old : size);
    free(p);
    return moved;
}

void *reallocarray(void *p, size_t count, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, total);
}

static int is_power_of_two(size_t n) { return n != 0 && (n & (n - 1)) == 0; }

int posix_memalign(void **out, size_t align, size_t size)
{
    if (!is_power_of_two(align) || align % sizeof(void *) != 0)
        return EINVAL;
    int saved = errno;
    void *p = allocate(size, align < MIN_ALIGN ? MIN_ALIGN : align);
    errno = saved; /* posix_memalign reports by its return value */
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t size)
{
    if (!is_power_of_two(align)) {
        errno = EINVAL;
        return NULL;
    }
    return allocate(size, align < MIN_ALIGN ? MIN_ALIGN : align);
}

void *memalign(size_t align, size_t size) { return aligned_alloc(align, size); }

void *valloc(size_t size) { return allocate(size, (size_t)sysconf(_SC_PAGESIZE)); }

void *pvalloc(size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), rounded;
    if (__builtin_add_overflow(size, page - 1, &rounded)) {
        errno = ENOMEM;
        return NULL;
    }
    return allocate(rounded & ~(page - 1), page);
}

size_t malloc_usable_size(void *p)
{
    if (p == NULL)
        return 0;
    pthread_mutex_lock(&heap_lock);
    size_t size = mm_usable_size(p);
    pthread_mutex_unlock(&heap_lock);
    return size;
}

/* The harness calls these (the kit exports them for Rust allocators). */
int heap_check(void)
{
    pthread_mutex_lock(&heap_lock);
    int problem = mm_check();
    pthread_mutex_unlock(&heap_lock);
    return problem;
}

int mallopt(int param, int value)
{
    (void)param; /* chapter 3: M_MMAP_THRESHOLD (-3) sets the mmap threshold */
    (void)value;
    return 0;
}

/* glibc's internal names, which some programs and libraries call directly: without
 * them, glibc's own allocator would run on your pointers. */
void *__libc_malloc(size_t size) { return malloc(size); }
void __libc_free(void *p) { free(p); }
void *__libc_calloc(size_t count, size_t size) { return calloc(count, size); }
void *__libc_realloc(void *p, size_t size) { return realloc(p, size); }
void *__libc_memalign(size_t align, size_t size) { return memalign(align, size); }
void *__libc_valloc(size_t size) { return valloc(size); }
void *__libc_pvalloc(size_t size) { return pvalloc(size); }
