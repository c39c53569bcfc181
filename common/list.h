/*
 * Intrusive circular doubly-linked lists: an object sits on a list through a
 * List member and is recovered with container_of.  Moving an object between
 * lists is O(1), which is how connection states are tracked.
 */
#ifndef PGHANDOFF_COMMON_LIST_H
#define PGHANDOFF_COMMON_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct List {
	struct List *next;
	struct List *prev;
} List;

#define container_of(ptr, type, member) ((type *) ((char *) (ptr) -offsetof(type, member)))

#define LIST_INIT(name) \
	{ \
		&(name), &(name) \
	}

static inline void
list_init(List *list)
{
	list->next = list;
	list->prev = list;
}

static inline bool
list_empty(const List *list)
{
	return list->next == list;
}

static inline void
list_append(List *list, List *item)
{
	item->prev = list->prev;
	item->next = list;
	list->prev->next = item;
	list->prev = item;
}

static inline void
list_del(List *item)
{
	item->prev->next = item->next;
	item->next->prev = item->prev;
	list_init(item);
}

static inline int
list_count(const List *list)
{
	int n = 0;

	for (const List *it = list->next; it != list; it = it->next)
		n++;
	return n;
}

/* Iteration that tolerates removal of the current item. */
#define list_for_each_safe(item, tmp, list) \
	for ((item) = (list)->next, (tmp) = (item)->next; (item) != (list); (item) = (tmp), (tmp) = (item)->next)

#define list_for_each(item, list) for ((item) = (list)->next; (item) != (list); (item) = (item)->next)

#endif
