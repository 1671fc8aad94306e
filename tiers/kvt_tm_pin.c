/*
 * kvt_tm_pin.c - the tier manager's pin table (kvt_tm_int.h): which keys
 * are pinned and by how many holders.  kvt_tm_pin() and kvt_tm_unpin()
 * (kvt_tm.c) decide; this file keeps the table and pins a key's L1 entry
 * again when a new one appears.  Pins are per key, so a chained hash table
 * of TM_PIN_BUCKETS buckets by kvt_key_hash() finds them in O(1) for any
 * reasonable number of pins (each connection pins what it restores).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_tm_int.h"

static struct pin **pin_slot(struct kvt_tm *tm, const struct kvt_key *k)
{
	uint64_t h = kvt_key_hash(k);
	struct pin **pp = &tm->pins[h & (TM_PIN_BUCKETS - 1)];

	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->ns_len == k->ns_len && (*pp)->key_len == k->key_len &&
		    memcmp((*pp)->name, k->ns, k->ns_len) == 0 &&
		    memcmp((*pp)->name + k->ns_len, k->key, k->key_len) == 0)
			break;
	return pp;
}

struct pin *kvt_tmi_pin_find(struct kvt_tm *tm, const struct kvt_key *k)
{
	return tm->npins ? *pin_slot(tm, k) : NULL;
}

int kvt_tmi_pin_add(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct pin **pp = pin_slot(tm, k);
	struct pin *p = malloc(sizeof(*p) + k->ns_len + k->key_len);

	if (!p)
		return -ENOMEM;
	p->count = 1;
	p->ns_len = k->ns_len;
	p->key_len = k->key_len;
	if (k->ns_len)
		memcpy(p->name, k->ns, k->ns_len);
	if (k->key_len)
		memcpy(p->name + k->ns_len, k->key, k->key_len);
	p->next = *pp;
	*pp = p;
	tm->npins++;
	return 0;
}

int kvt_tmi_pin_drop(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct pin **pp = pin_slot(tm, k), *p = *pp;

	if (!p)
		return -1;
	if (--p->count > 0)
		return (int)p->count;
	*pp = p->next;
	free(p);
	tm->npins--;
	return 0;
}

void kvt_tmi_pins_free(struct kvt_tm *tm)
{
	for (size_t b = 0; b < TM_PIN_BUCKETS; b++)
		while (tm->pins[b]) {
			struct pin *p = tm->pins[b];
			tm->pins[b] = p->next;
			free(p);
		}
	tm->npins = 0;
}

void kvt_tmi_reapply_pin(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct kvt_ref *ref;
	uint64_t now;

	if (!kvt_tmi_pin_find(tm, k))
		return;
	now = tm->now_s();
	if (kvt_lru_peek(tm->l1, k, now, &ref) != 0)
		return;
	if (kvt_lru_pinned_bytes(tm->l1) + kvt_lru_ref_cost(ref) >
	    tm->pin_cap) {
		tm->pins_rejected++;
	} else {
		kvt_lru_set_pinned(tm->l1, k, true, now);
	}
	kvt_ref_release(ref);
}
