/* A malloc a student might write in C for phase 1: one heap grown with sbrk, a
 * singly linked free list searched first fit, a mutex and fork handlers, misuse
 * reported as the course asks. Correct as it stands; each -D switch below breaks it
 * the way a student's allocator breaks, for harness/tests/grader.rs to grade:
 *
 *   -DALIGN=8              blocks aligned to 8 bytes, not 16
 *   -DNEVER_FREE           a bump allocator: free forgets the block
 *   -DCALLOC_NO_OVERFLOW   calloc multiplies without checking the product
 *   -DONLY_FOUR            exports malloc, free, calloc and realloc, nothing else
 *   -DSPIN_IN_CALLOC       calloc never returns (glibc calls it as every program starts)
 *   -DSPIN_IN_USABLE_SIZE  malloc_usable_size never returns
 *
 * Build: gcc -shared -fPIC -O2 [-D...] student.c -o libstudent.so -lpthread */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#ifndef ALIGN
#define ALIGN 16
#endif

/* Every block starts with this header; the payload follows it. */
struct header {
    size_t size;  /* payload bytes */
    size_t magic; /* one of the three below */
};
#define IN_USE ((size_t)0xa110c8edUL)
#define FREE ((size_t)0xf4eeb10cUL)
/* An aligned block: a header in front of the aligned address whose size field
 * holds the distance back to the real block's payload. */
#define OFFSET ((size_t)0x0ff5e7UL)

struct free_block {
    struct free_block *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __attribute__((unused)) struct free_block *free_list;
static char *heap_start, *heap_end;

static void say(const char *text) { (void)!write(2, text, strlen(text)); }

static void say_pointer_and_exit(const char *before, void *p, const char *after, const char *who,
                                 int code) {
    char hex[2 + 16 + 1];
    uintptr_t v = (uintptr_t)p;
    int i = 18;
    hex[i] = 0;
    do {
        hex[--i] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v && i > 2);
    hex[--i] = 'x';
    hex[--i] = '0';
    say(before);
    say(hex + i);
    say(after);
    say(who);
    say("\n");
    _exit(code);
}

static void before_fork(void) { pthread_mutex_lock(&lock); }
static void after_fork(void) { pthread_mutex_unlock(&lock); }
static void child_after_fork(void) { pthread_mutex_init(&lock, NULL); }

__attribute__((constructor)) static void start(void) {
    pthread_atfork(before_fork, after_fork, child_after_fork);
}

static size_t round_up(size_t n) { return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1); }

static struct header *header_of(void *p) { return (struct header *)p - 1; }

/* Called with the lock held. */
static void *alloc(size_t size) {
    if (size > PTRDIFF_MAX / 2) {
        errno = ENOMEM;
        return NULL;
    }
    size = round_up(size ? size : 1);
#ifndef NEVER_FREE
    struct free_block **link = &free_list;
    for (struct free_block *b = free_list; b; link = &b->next, b = b->next) {
        struct header *h = header_of(b);
        if (h->size >= size) {
            *link = b->next;
            h->magic = IN_USE;
            return b;
        }
    }
#endif
    if (!heap_start) {
        /* The first header lands so that payloads are ALIGN-aligned (and, with
         * ALIGN 8, deliberately 8 bytes off a 16-byte boundary). */
        char *now = sbrk(0);
        size_t pad = (16 - ((uintptr_t)now + sizeof(struct header)) % 16) % 16 + (ALIGN == 8 ? 8 : 0);
        if (sbrk(pad) == (void *)-1) {
            errno = ENOMEM;
            return NULL;
        }
        heap_start = heap_end = now + pad;
    }
    char *block = sbrk(sizeof(struct header) + size);
    if (block == (void *)-1) {
        errno = ENOMEM;
        return NULL;
    }
    heap_end = block + sizeof(struct header) + size;
    struct header *h = (struct header *)block;
    h->size = size;
    h->magic = IN_USE;
    return h + 1;
}

/* Called with the lock held: the block that `p` names, or the process ends. */
static struct header *owned(void *p, const char *who) {
    if ((char *)p < heap_start + sizeof(struct header) || (char *)p >= heap_end || (uintptr_t)p % 8)
        say_pointer_and_exit("error: invalid pointer ", p, " passed to ", who, 2);
    struct header *h = header_of(p);
    if (h->magic == OFFSET)
        return owned((char *)p - h->size, who);
    if (h->magic == FREE)
        say_pointer_and_exit("error: double free detected at ", p, " in ", who, 3);
    if (h->magic != IN_USE)
        say_pointer_and_exit("error: invalid pointer ", p, " (no block starts there) passed to ", who, 2);
    return h;
}

static void release(void *p) {
    struct header *h = owned(p, "free");
#ifdef NEVER_FREE
    (void)h;
#else
    h->magic = FREE;
    struct free_block *b = (struct free_block *)(h + 1);
    b->next = free_list;
    free_list = b;
#endif
}

void *malloc(size_t size) {
    pthread_mutex_lock(&lock);
    void *p = alloc(size);
    pthread_mutex_unlock(&lock);
    return p;
}

void free(void *p) {
    if (!p)
        return;
    int saved = errno;
    pthread_mutex_lock(&lock);
#ifdef NEVER_FREE
    /* A bump allocator: nothing to do, nothing checked. */
    (void)release;
#else
    release(p);
#endif
    pthread_mutex_unlock(&lock);
    errno = saved;
}

void *calloc(size_t count, size_t size) {
#ifdef SPIN_IN_CALLOC
    for (;;)
        __asm__ volatile("" ::: "memory");
#endif
    size_t bytes;
#ifdef CALLOC_NO_OVERFLOW
    bytes = count * size;
#else
    if (__builtin_mul_overflow(count, size, &bytes)) {
        errno = ENOMEM;
        return NULL;
    }
#endif
    /* The heap's own function, not the exported malloc: GCC turns malloc followed by
     * memset into a call to calloc, which here would be this function calling itself. */
    pthread_mutex_lock(&lock);
    void *p = alloc(bytes);
    pthread_mutex_unlock(&lock);
    if (p)
        memset(p, 0, bytes);
    return p;
}

static size_t payload_size(void *p, const char *who) {
    pthread_mutex_lock(&lock);
    struct header *h = owned(p, who);
    size_t size = h->size - ((char *)p - (char *)(h + 1));
    pthread_mutex_unlock(&lock);
    return size;
}

void *realloc(void *p, size_t size) {
    if (!p)
        return malloc(size);
    if (size == 0) {
        free(p);
        return NULL;
    }
    size_t old = payload_size(p, "realloc");
    if (old >= size)
        return p;
    void *q = malloc(size);
    if (!q)
        return NULL;
    memcpy(q, p, old);
    free(p);
    return q;
}

#ifndef ONLY_FOUR
void *reallocarray(void *p, size_t count, size_t size) {
    size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, bytes);
}

size_t malloc_usable_size(void *p) {
#ifdef SPIN_IN_USABLE_SIZE
    for (;;)
        __asm__ volatile("" ::: "memory");
#endif
    return p ? payload_size(p, "malloc_usable_size") : 0;
}

static int valid_alignment(size_t align) { return align && !(align & (align - 1)); }

void *memalign(size_t align, size_t size) {
    if (!valid_alignment(align)) {
        errno = EINVAL;
        return NULL;
    }
    if (align <= ALIGN)
        return malloc(size);
    if (size > PTRDIFF_MAX / 2 || align > PTRDIFF_MAX / 2) {
        errno = ENOMEM;
        return NULL;
    }
    char *base = malloc(size + align + sizeof(struct header));
    if (!base)
        return NULL;
    uintptr_t at = ((uintptr_t)base + sizeof(struct header) + align - 1) & ~(uintptr_t)(align - 1);
    struct header *h = header_of((void *)at);
    h->size = at - (uintptr_t)base;
    h->magic = OFFSET;
    return (void *)at;
}

void *aligned_alloc(size_t align, size_t size) { return memalign(align, size); }

int posix_memalign(void **out, size_t align, size_t size) {
    if (!valid_alignment(align) || align % sizeof(void *))
        return EINVAL;
    int saved = errno;
    void *p = memalign(align, size);
    int failure = errno;
    errno = saved;
    if (!p)
        return failure;
    *out = p;
    return 0;
}

void *valloc(size_t size) { return memalign(sysconf(_SC_PAGESIZE), size); }

void *pvalloc(size_t size) {
    size_t page = sysconf(_SC_PAGESIZE);
    if (size > PTRDIFF_MAX / 2) {
        errno = ENOMEM;
        return NULL;
    }
    return memalign(page, (size + page - 1) & ~(page - 1));
}
#endif
