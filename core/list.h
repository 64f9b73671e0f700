/* Intrusive circular doubly linked list (the Linux kernel's shape): embed a gale_list in a record,
 * link it into a head, recover the record with gale_list_entry(). O(1) insert and unlink; an
 * unlinked node points to itself, so unlinking twice is harmless. Not thread-safe. */
#ifndef GALE_CORE_LIST_H
#define GALE_CORE_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gale_list {
    struct gale_list *prev;
    struct gale_list *next;
} gale_list;

#define gale_list_entry(node, type, member) ((type *)((char *)(node)-offsetof(type, member)))

static inline void gale_list_init(gale_list *l) { l->prev = l->next = l; }

static inline bool gale_list_empty(const gale_list *l) { return l->next == l; }

/* Links `node` at the tail of `head`. */
static inline void gale_list_push_back(gale_list *head, gale_list *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

static inline void gale_list_unlink(gale_list *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = node;
}

#endif
