#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node { int key; char *name; struct node *left, *right; };
static struct node *insert(struct node *t, int key, const char *name) {
    if (!t) { t = calloc(1, sizeof *t); t->key = key; t->name = strdup(name); return t; }
    if (key < t->key) t->left = insert(t->left, key, name); else t->right = insert(t->right, key, name);
    return t;
}
static void walk(const struct node *t, double *sum) { if (!t) return; walk(t->left, sum); *sum += t->key; walk(t->right, sum); }
static void drop(struct node *t) { if (!t) return; drop(t->left); drop(t->right); free(t->name); free(t); }
int main(int argc, char **argv) {
    struct node *root = NULL; char buf[32]; double sum = 0;
    for (int i = 0; i < 1000; i++) { snprintf(buf, sizeof buf, "n%d", (i * 7919) % 1000); root = insert(root, (i * 7919) % 1000, buf); }
    walk(root, &sum); printf("%s %f\n", argc > 1 ? argv[1] : "sum", sum); drop(root); return 0;
}
