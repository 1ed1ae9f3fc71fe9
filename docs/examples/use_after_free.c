#include <stdlib.h>
#include <string.h>
/* A use-after-free that overwrites the free list's link, then a malloc that follows it. */
int main(void) {
    char *a = malloc(100);
    free(a);
    memset(a, 0x41, 16);  /* the bug: writes into a freed block */
    char *b = malloc(200);  /* first fit walks the list: from a, to 0x4141414141414141 */
    return b == NULL;
}
