/* Indexed binary min-heap for timers.
 *
 * Nodes are small value records {key, seq, id} stored in one array, so comparisons never chase a
 * pointer. Each node's owner (a timer slot, found by `id`) stores the node's current index in the
 * heap: the heap writes it through `idx_base + id * idx_stride` on every move, which is what makes
 * removal of an arbitrary entry O(log n). Order is (key, seq): equal keys come out in seq order, so
 * a caller that hands out increasing seq numbers gets FIFO on ties.
 *
 * Everything is static inline: the heap is used by the loop only and the compiler should see the
 * whole sift loops. Not thread-safe.
 */
#ifndef GALE_CORE_HEAP_H
#define GALE_CORE_HEAP_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct gale_heap_node {
    int64_t key;
    uint32_t seq; /* compared modulo 2^32: ties stay FIFO while the live nodes of one key were
                   * pushed fewer than 2^31 pushes apart */
    uint32_t id;
} gale_heap_node;

typedef struct gale_heap {
    gale_heap_node *v;
    uint32_t n;
    uint32_t cap;
    /* Where node `id` keeps its index: *(uint32_t *)(idx_base + id * idx_stride). */
    char *idx_base;
    size_t idx_stride;
} gale_heap;

/* Tells the heap where owners keep their index (call again whenever that array moves). */
static inline void gale_heap_set_index_array(gale_heap *h, void *base, size_t stride)
{
    h->idx_base = base;
    h->idx_stride = stride;
}

static inline void gale_heap_free(gale_heap *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

static inline bool gale_heap_less(const gale_heap_node *a, const gale_heap_node *b)
{
    return a->key < b->key || (a->key == b->key && (int32_t)(a->seq - b->seq) < 0);
}

static inline void gale_heap_place(gale_heap *h, uint32_t i, gale_heap_node node)
{
    h->v[i] = node;
    *(uint32_t *)(h->idx_base + (size_t)node.id * h->idx_stride) = i;
}

static inline void gale_heap_sift_up(gale_heap *h, uint32_t i)
{
    gale_heap_node node = h->v[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!gale_heap_less(&node, &h->v[parent]))
            break;
        gale_heap_place(h, i, h->v[parent]);
        i = parent;
    }
    gale_heap_place(h, i, node);
}

static inline void gale_heap_sift_down(gale_heap *h, uint32_t i)
{
    gale_heap_node node = h->v[i];
    uint32_t n = h->n;
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && gale_heap_less(&h->v[child + 1], &h->v[child]))
            child++;
        if (!gale_heap_less(&h->v[child], &node))
            break;
        gale_heap_place(h, i, h->v[child]);
        i = child;
    }
    gale_heap_place(h, i, node);
}

/* Inserts {key, seq, id}. Returns 0 or -ENOMEM (the heap is unchanged). */
static inline int gale_heap_push(gale_heap *h, int64_t key, uint32_t seq, uint32_t id)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 64;
        if (cap <= h->cap)
            return -ENOMEM;
        gale_heap_node *v = realloc(h->v, (size_t)cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n] = (gale_heap_node){.key = key, .seq = seq, .id = id};
    gale_heap_sift_up(h, h->n++);
    return 0;
}

/* The smallest node, or NULL when empty. */
static inline const gale_heap_node *gale_heap_top(const gale_heap *h)
{
    return h->n ? &h->v[0] : NULL;
}

/* Removes the node at index `i` (as stored by its owner). */
static inline void gale_heap_remove(gale_heap *h, uint32_t i)
{
    uint32_t last = --h->n;
    if (i == last)
        return;
    gale_heap_node moved = h->v[last];
    gale_heap_place(h, i, moved);
    if (i > 0 && gale_heap_less(&moved, &h->v[(i - 1) / 2]))
        gale_heap_sift_up(h, i);
    else
        gale_heap_sift_down(h, i);
}

/* Checks the heap property and every owner's stored index. Returns true when valid. */
static inline bool gale_heap_valid(const gale_heap *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (*(const uint32_t *)(h->idx_base + (size_t)h->v[i].id * h->idx_stride) != i)
            return false;
        if (i > 0 && gale_heap_less(&h->v[i], &h->v[(i - 1) / 2]))
            return false;
    }
    return true;
}

#endif
