/*
 * kvt_l3_check.c - L3 consistency checker (fsck), see kvt_l3_check() in
 * kvt_l3.h.  It changes nothing: it walks the index in one read
 * transaction, judges every record as kvt_l3_open() would (reporting what
 * an open drops instead of dropping it, on a read-only handle), compares
 * it with the mirror, re-reads every entry with plain pread() and checks
 * header, key and checksum, and recounts the regions' and namespaces'
 * totals.
 */
#include "kvt_l3_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvtier_errors.h"

/* ---- fsck --------------------------------------------------------------- */

/* One index record worth reading back. */
struct l3_crec {
	struct l3_loc loc;
	const uint8_t *ns, *key; /* in the read transaction's pages */
	size_t ns_len, key_len;
	int mirrored; /* also in the mirror */
};

static int crec_cmp(const void *a, const void *b)
{
	const struct l3_loc *x = &((const struct l3_crec *)a)->loc;
	const struct l3_loc *y = &((const struct l3_crec *)b)->loc;

	if (x->region != y->region)
		return x->region < y->region ? -1 : 1;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return 0;
}

#define PROBLEM(...)                                                    \
	do {                                                            \
		problems++;                                             \
		if (report)                                             \
			fprintf(report, "l3 check: " __VA_ARGS__);      \
	} while (0)

static int check(struct kvt_l3 *l3, FILE *report);

/*
 * The per-namespace totals against a recount of each namespace's entries,
 * and the namespaces' entries against the whole mirror's.
 */
static int check_namespaces(struct kvt_l3 *l3, FILE *report)
{
	uint64_t all = 0;
	int problems = 0;

	lock(l3); /* hit counts move */
	for (size_t b = 0; b < l3->nnsb; b++)
		for (struct l3_ns *n = l3->nsb[b]; n; n = n->hnext) {
			uint64_t ents = 0, bytes = 0, raw = 0, hits = 0;

			for (struct l3_ent *e = n->ents; e; e = e->nnext) {
				ents++;
				bytes += e->loc.length;
				raw += e->loc.raw_len;
				hits += e->loc.hits;
				if (e->ns != n)
					PROBLEM("an entry on namespace "
						"%.*s's list belongs to "
						"another\n", (int)n->len,
						(const char *)n->name);
			}
			all += ents;
			if (ents != n->entries || bytes != n->bytes ||
			    raw != n->raw_bytes || hits != n->hits)
				PROBLEM("namespace %.*s: totals %" PRIu64
					"/%" PRIu64 "/%" PRIu64 "/%" PRIu64
					" (entries/bytes/raw/hits), recount "
					"%" PRIu64 "/%" PRIu64 "/%" PRIu64
					"/%" PRIu64 "\n", (int)n->len,
					(const char *)n->name, n->entries,
					n->bytes, n->raw_bytes, n->hits, ents,
					bytes, raw, hits);
			if (!n->refs)
				PROBLEM("namespace %.*s kept with no "
					"reference\n", (int)n->len,
					(const char *)n->name);
		}
	if (all != l3->nents)
		PROBLEM("namespaces hold %" PRIu64 " entries, the mirror "
			"%zu\n", all, l3->nents);
	unlock(l3);
	return problems;
}

int kvt_l3_check(struct kvt_l3 *l3, FILE *report)
{
	int rc;

	if (!l3)
		return KVT_EINVAL;
	/*
	 * As the writer: nothing changes the index or the mirror's structure
	 * meanwhile.  Readers may still count hits and doom entries (under
	 * mu, which the comparisons below take).
	 */
	pthread_mutex_lock(&l3->wmu);
	rc = check(l3, report);
	pthread_mutex_unlock(&l3->wmu);
	return rc;
}

/* Reads back and verifies one entry; returns the problems found (0, 1). */
static int check_entry(struct kvt_l3 *l3, const struct l3_crec *c,
		       FILE *report)
{
	const struct l3_loc *l = &c->loc;
	const struct l3_region *r = &l3->regions[l->region];
	uint64_t done = 0;
	uint8_t *buf;
	int problems = 0;

	if (r->fd < 0)
		return 0; /* the missing file is reported once, per region */
	if (posix_memalign((void **)&buf, KVT_L3_ALIGN, l->length)) {
		PROBLEM("no memory to read an entry\n");
		return problems;
	}
	while (done < l->length) {
		ssize_t n = pread(r->dfd >= 0 ? r->dfd : r->fd, buf + done,
				  l->length - done, (off_t)(l->offset + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (uint64_t)n;
	}
	if (done < l->length)
		PROBLEM("region %" PRIu32 " offset %" PRIu64 ": read failed "
			"(%s)\n", l->region, l->offset,
			done ? "short" : strerror(errno));
	else if (kvt_l3i_entry_verify(buf, l, c->ns, c->ns_len, c->key,
				      c->key_len))
		PROBLEM("region %" PRIu32 " offset %" PRIu64 ": header, key "
			"or checksum mismatch\n", l->region, l->offset);
	free(buf);
	return problems;
}

/* The regions: records, fill, files. */
static int check_regions(struct kvt_l3 *l3, MDB_txn *txn, FILE *report)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, problems = 0;

	for (uint32_t i = 0; i < l3->nregions; i++) {
		const struct l3_region *r = &l3->regions[i];
		struct stat st;

		if (r->fill > l3->region_size)
			PROBLEM("region %" PRIu32 ": fill %" PRIu64 " past the "
				"region size\n", i, r->fill);
		if (r->fd < 0) {
			if (r->seq)
				PROBLEM("region %" PRIu32 ": its file is "
					"missing\n", i);
		} else if (fstat(r->fd, &st) == 0 &&
			   (uint64_t)st.st_size < l3->region_size) {
			PROBLEM("region %" PRIu32 ": its file has %" PRIu64
				" bytes, not %" PRIu64 "\n", i,
				(uint64_t)st.st_size, l3->region_size);
		}
	}
	if (mdb_cursor_open(txn, l3->db_regions, &cur))
		return problems;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 4 || v.mv_size != L3_REGREC)
			PROBLEM("malformed region record\n");
		else if (get_u32(k.mv_data) >= l3->nregions)
			PROBLEM("a record for region %" PRIu32 ", past the "
				"store's %" PRIu32 "\n", get_u32(k.mv_data),
				l3->nregions);
	}
	mdb_cursor_close(cur);
	return problems;
}

static int check(struct kvt_l3 *l3, FILE *report)
{
	struct l3_crec *recs = NULL;
	size_t nrec = 0, cap = 0, nall = 0, nexpired = 0, nmirrored = 0;
	uint64_t *live = NULL, bytes = 0, raw = 0, fill = 0, now = l3->now_s();
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, problems = 0;

	/*
	 * One read transaction for the whole check (the writer is held off,
	 * see kvt_l3_check()): the namespaces and keys are read in place.
	 */
	if ((rc = mdb_txn_begin(l3->env, NULL, MDB_RDONLY, &txn)))
		return kvt_l3i_mdb_err(rc);
	if (report)
		fprintf(report, "l3 check: %s: format %u, %" PRIu32 " regions "
			"of %" PRIu64 " bytes, index %" PRIu64 " bytes in use\n",
			l3->root, L3_VERSION, l3->nregions, l3->region_size,
			kvt_l3i_index_used(l3));
	if ((rc = mdb_cursor_open(txn, l3->db_index, &cur))) {
		mdb_txn_abort(txn);
		return kvt_l3i_mdb_err(rc);
	}
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct l3_crec *c;
		struct l3_ent *e;
		int verdict;

		nall++;
		if (nrec == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			void *p = realloc(recs, ncap * sizeof(*recs));

			if (!p) {
				rc = ENOMEM;
				break;
			}
			recs = p;
			cap = ncap;
		}
		c = &recs[nrec];
		verdict = kvt_l3i_rec_judge(l3, &k, &v, now, &c->loc);
		if (verdict == L3_REC_MALFORMED) {
			PROBLEM("malformed index record (%zu-byte key, "
				"%zu-byte record)\n", k.mv_size, v.mv_size);
			continue;
		}
		if (verdict != L3_REC_OK && verdict != L3_REC_EXPIRED) {
			PROBLEM("entry in region %" PRIu32 " offset %" PRIu64
				": %s\n", c->loc.region, c->loc.offset,
				kvt_l3i_rec_why(verdict));
			continue;
		}
		nexpired += verdict == L3_REC_EXPIRED;
		kvt_l3i_rec_key(&k, &v, &c->ns, &c->ns_len, &c->key,
				&c->key_len);
		e = kvt_l3i_map_find(l3, k.mv_data, k.mv_size,
				     kvt_l3i_ikey_hash(k.mv_data, k.mv_size));
		c->mirrored = e != NULL;
		if (e) {
			int same;

			lock(l3); /* loc.hits may be counting */
			same = loc_equal(&e->loc, &c->loc);
			unlock(l3);
			if (!same)
				PROBLEM("index and memory disagree on an "
					"entry\n");
			nmirrored++;
		} else if (!l3->read_only || verdict == L3_REC_OK) {
			/* Read-only, expired entries are left out. */
			PROBLEM("index entry missing from memory\n");
		}
		nrec++;
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		free(recs);
		return rc == ENOMEM ? -ENOMEM : kvt_l3i_mdb_err(rc);
	}
	if (nmirrored != l3->nents) /* the writer's to change: no lock */
		PROBLEM("index holds %zu entries, memory %zu\n", nmirrored,
			l3->nents);

	live = calloc(l3->nregions, sizeof(*live));
	if (!live) {
		mdb_txn_abort(txn);
		free(recs);
		return -ENOMEM;
	}
	if (nrec > 1) /* qsort(NULL, 0, ...) is undefined */
		qsort(recs, nrec, sizeof(*recs), crec_cmp);
	for (size_t i = 0; i < nrec; i++) {
		const struct l3_loc *l = &recs[i].loc;

		if (recs[i].mirrored) {
			live[l->region] += l->length;
			bytes += l->length;
			raw += l->raw_len;
		}
		if (i && recs[i - 1].loc.region == l->region &&
		    recs[i - 1].loc.offset + recs[i - 1].loc.length > l->offset)
			PROBLEM("region %" PRIu32 " offset %" PRIu64
				": overlaps the previous entry\n", l->region,
				l->offset);
		problems += check_entry(l3, &recs[i], report);
	}
	problems += check_regions(l3, txn, report);
	mdb_txn_abort(txn);
	for (uint32_t i = 0; i < l3->nregions; i++) {
		const struct l3_region *r = &l3->regions[i];

		fill += r->seq ? r->fill : 0;
		if (live[i] != r->live)
			PROBLEM("region %" PRIu32 ": %" PRIu64 " live bytes "
				"indexed, %" PRIu64 " accounted\n", i, live[i],
				r->live);
		if (live[i] > r->fill)
			PROBLEM("region %" PRIu32 ": fill %" PRIu64
				" inconsistent\n", i, r->fill);
	}
	if (bytes != l3->bytes || raw != l3->raw_bytes ||
	    fill != l3->total_fill)
		PROBLEM("totals differ: bytes %" PRIu64 "/%" PRIu64
			", raw %" PRIu64 "/%" PRIu64 ", fill %" PRIu64
			"/%" PRIu64 "\n", bytes, l3->bytes, raw, l3->raw_bytes,
			fill, l3->total_fill);
	problems += check_namespaces(l3, report);
	if (report)
		fprintf(report, "l3 check: %zu entries (%zu expired, not "
			"dropped), %d problem(s)\n", nall, nexpired, problems);
	free(live);
	free(recs);
	return problems;
}
