/*
 * kvt_l3_mdb.c - checks L3's LMDB data file (index/data.mdb) before LMDB is
 * let near it (kvt_l3i_mdb_validate()).
 *
 * LMDB trusts its file: it maps it and follows page numbers, node offsets
 * and lengths as they are.  A file shorter than its meta pages say (a
 * truncation) makes the first access past the end a SIGBUS; a flipped bit in
 * a page header or a node makes it read or copy out of bounds (SIGSEGV) or
 * corrupt memory.  A cache must never die of its own damaged file, so the
 * file is checked first, here, by code that trusts nothing: the two meta
 * pages (read with pread()), the file's size against the last page they
 * claim, then every page reachable from the main tree, each named
 * database's tree and the free list, visited once (a bitmap catches cycles
 * and pages shared between trees): its number, type, bounds of its node
 * table, each node's key and data within the page, each branch's child and
 * each overflow run within the file, sub-database records and free-list
 * page lists well formed, no free page also in use.  Anything else is
 * "damaged", with a reason, and the store is refused.
 *
 * The layout below is LMDB's on-disk format version 1 (liblmdb 0.9.x, 64-bit
 * pgno_t and size_t, little endian), stable since 2011: mdb.c's MDB_page,
 * MDB_node, MDB_meta and MDB_db.  Everything is read bytewise at the offsets
 * named here.  Keys' order and record contents are not checked: a misorder
 * only makes lookups miss, and records are checked by kvt_l3_open() itself.
 */
#include "kvt_l3_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvtier_errors.h"

/* ---- LMDB's format (mdb.c) ---------------------------------------------- */

#define MDB_MAGIC_ 0xBEEFC0DEu
#define MDB_DATA_VERSION_ 1u
#define PAGEHDRSZ 16u       /* MDB_page: pgno u64, pad u16, flags u16, lower/upper u16 */
#define PG_PGNO 0
#define PG_FLAGS 10
#define PG_LOWER 12
#define PG_UPPER 14
#define PG_PAGES 12         /* u32, overflow pages: the run's length */
#define P_BRANCH 0x01
#define P_LEAF 0x02
#define P_OVERFLOW 0x04
#define P_META 0x08
#define P_DIRTY 0x10
#define P_LEAF2 0x20
#define P_SUBP 0x40
#define P_LOOSE 0x4000
#define P_KEEP 0x8000
#define NODESIZE 8u         /* MDB_node: lo u16, hi u16, flags u16, ksize u16 */
#define F_BIGDATA 0x01
#define F_SUBDATA 0x02
#define F_DUPDATA 0x04
#define META_MAGIC 0        /* MDB_meta, at PAGEHDRSZ into a meta page */
#define META_VERSION 4
#define META_DBS 24         /* MDB_db[2]: FREE_DBI, MAIN_DBI */
#define META_LAST_PG 120
#define META_TXNID 128
#define META_SIZE 136
#define DB_SIZE 48          /* MDB_db */
#define DB_PAD 0            /* u32; in the meta's FREE_DBI: the page size */
#define DB_FLAGS 4
#define DB_DEPTH 6
#define DB_ENTRIES 32
#define DB_ROOT 40
#define P_INVALID UINT64_MAX
#define CURSOR_STACK 32     /* LMDB's deepest tree */
#define MAXKEY 511          /* LMDB's longest key (MDB_MAXKEYSIZE) */
#define MDB_INTEGERKEY_ 0x08 /* lmdb.h's MDB_INTEGERKEY */

/* ---- state -------------------------------------------------------------- */

struct mv {
	const uint8_t *map; /* the file, mapped read-only, size bytes */
	uint64_t size;
	uint32_t psize;
	uint64_t npages;    /* last_pg + 1 of the meta in use */
	uint8_t *seen;      /* one bit per page */
	uint64_t *freepg;   /* pages the free list names, checked at the end */
	size_t nfree, free_cap;
	uint8_t *bytes;     /* one bit per byte of a page: nodes' extents */
	char *why;
	size_t why_len;
};

static int bad(struct mv *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int bad(struct mv *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->why, m->why_len, fmt, ap);
	va_end(ap);
	return KVT_ECORRUPT;
}

static const uint8_t *page(const struct mv *m, uint64_t pgno)
{
	return m->map + pgno * m->psize;
}

/* Takes page pgno (in the file, not visited before) for a walk. */
static int claim(struct mv *m, uint64_t pgno, const char *what)
{
	if (pgno >= m->npages)
		return bad(m, "%s points at page %" PRIu64 ", past the last "
			   "page %" PRIu64, what, pgno, m->npages - 1);
	if (m->seen[pgno / 8] & (1u << (pgno % 8)))
		return bad(m, "page %" PRIu64 " is reached twice (%s)", pgno,
			   what);
	m->seen[pgno / 8] |= (uint8_t)(1u << (pgno % 8));
	if (get_u64(page(m, pgno) + PG_PGNO) != pgno)
		return bad(m, "page %" PRIu64 " carries the number %" PRIu64,
			   pgno, get_u64(page(m, pgno) + PG_PGNO));
	return 0;
}

/* Bytes of the overflow run at pgno holding dsize bytes, checked. */
static int overflow(struct mv *m, uint64_t pgno, uint64_t dsize,
		    const uint8_t **data)
{
	uint64_t want = (PAGEHDRSZ - 1 + dsize) / m->psize + 1;
	const uint8_t *p;
	int rc = claim(m, pgno, "a large record");

	if (rc)
		return rc;
	p = page(m, pgno);
	if ((get_u16(p + PG_FLAGS) & ~(P_DIRTY | P_KEEP)) != P_OVERFLOW ||
	    get_u32(p + PG_PAGES) != want)
		return bad(m, "overflow page %" PRIu64 " is malformed", pgno);
	if (pgno + want > m->npages)
		return bad(m, "overflow run at page %" PRIu64 " runs past the "
			   "last page", pgno);
	for (uint64_t i = 1; i < want; i++) {
		uint64_t q = pgno + i;

		if (m->seen[q / 8] & (1u << (q % 8)))
			return bad(m, "page %" PRIu64 " is reached twice (an "
				   "overflow run)", q);
		m->seen[q / 8] |= (uint8_t)(1u << (q % 8));
	}
	*data = p + PAGEHDRSZ;
	return 0;
}

enum tree { T_FREE, T_MAIN, T_SUB };

static int walk(struct mv *m, uint64_t pgno, unsigned level, unsigned depth,
		enum tree t);

/* A free-list record: a page list (count, then that many page numbers). */
static int free_record(struct mv *m, const uint8_t *d, uint64_t dsize)
{
	uint64_t n;

	if (dsize < 8 || dsize % 8 || (n = get_u64(d)) != dsize / 8 - 1)
		return bad(m, "a free-list record is malformed");
	for (uint64_t i = 1; i <= n; i++) {
		uint64_t pg = get_u64(d + 8 * i);

		if (pg < 2 || pg >= m->npages)
			return bad(m, "the free list names page %" PRIu64
				   ", outside the file", pg);
		/* LMDB keeps page lists in descending order and relies on it. */
		if (i > 1 && pg >= get_u64(d + 8 * (i - 1)))
			return bad(m, "a free-list record is out of order");
		if (m->nfree == m->free_cap) {
			size_t nc = m->free_cap ? m->free_cap * 2 : 1024;
			uint64_t *p = realloc(m->freepg, nc * sizeof(*p));

			if (!p)
				return -ENOMEM;
			m->freepg = p;
			m->free_cap = nc;
		}
		m->freepg[m->nfree++] = pg;
	}
	return 0;
}

/* A main-tree record naming a database: an MDB_db, whose tree is walked. */
static int sub_record(struct mv *m, const uint8_t *d, uint64_t dsize)
{
	uint64_t root;
	unsigned depth;

	if (dsize != DB_SIZE)
		return bad(m, "a database record is %" PRIu64 " bytes", dsize);
	/* L3's databases are plain: no duplicates, no integer keys. */
	if (get_u16(d + DB_FLAGS) != 0)
		return bad(m, "a database has unexpected flags 0x%x",
			   get_u16(d + DB_FLAGS));
	root = get_u64(d + DB_ROOT);
	depth = get_u16(d + DB_DEPTH);
	if (root == P_INVALID)
		return depth == 0 && get_u64(d + DB_ENTRIES) == 0 ? 0 :
		       bad(m, "an empty database has depth or entries");
	if (depth == 0 || depth > CURSOR_STACK)
		return bad(m, "a database has depth %u", depth);
	return walk(m, root, 0, depth, T_SUB);
}

static int leaf_node(struct mv *m, const uint8_t *p, const uint8_t *node,
		     uint64_t pgno, enum tree t)
{
	uint16_t flags = get_u16(node + 4), ksize = get_u16(node + 6);
	uint64_t dsize = get_u16(node) | (uint64_t)get_u16(node + 2) << 16;
	const uint8_t *d = node + NODESIZE + ksize;
	uint64_t room = (uint64_t)(p + m->psize - d);
	int rc;

	if (flags & ~(F_BIGDATA | F_SUBDATA) || (flags & F_DUPDATA))
		return bad(m, "page %" PRIu64 ": a record has flags 0x%x",
			   pgno, flags);
	if ((flags & F_SUBDATA) && (t != T_MAIN || (flags & F_BIGDATA)))
		return bad(m, "page %" PRIu64 ": a misplaced database record",
			   pgno);
	if (flags & F_BIGDATA) {
		if (room < 8)
			return bad(m, "page %" PRIu64 ": a record runs past "
				   "the page", pgno);
		/* The run is within the file (overflow() checks). */
		if ((rc = overflow(m, get_u64(d), dsize, &d)))
			return rc;
	} else if (dsize > room) {
		return bad(m, "page %" PRIu64 ": a record runs past the page",
			   pgno);
	}
	if (t == T_FREE)
		return ksize == 8 ? free_record(m, d, dsize) :
		       bad(m, "a free-list key is %u bytes", ksize);
	if (flags & F_SUBDATA)
		return sub_record(m, d, dsize);
	return 0;
}

static int walk(struct mv *m, uint64_t pgno, unsigned level, unsigned depth,
		enum tree t)
{
	const uint8_t *p;
	uint16_t flags, lower, upper;
	unsigned nkeys;
	int rc = claim(m, pgno, "a tree");

	if (rc)
		return rc;
	p = page(m, pgno);
	flags = get_u16(p + PG_FLAGS) & ~(P_DIRTY | P_KEEP | P_LOOSE);
	lower = get_u16(p + PG_LOWER);
	upper = get_u16(p + PG_UPPER);
	/* Balanced trees: branches above, leaves at the last level. */
	if (flags != (level + 1 < depth ? P_BRANCH : P_LEAF))
		return bad(m, "page %" PRIu64 " has type 0x%x at level %u of "
			   "%u", pgno, flags, level, depth);
	if (lower < PAGEHDRSZ || (lower - PAGEHDRSZ) % 2 || lower > upper ||
	    upper > m->psize)
		return bad(m, "page %" PRIu64 " has a bad node table (%u..%u)",
			   pgno, lower, upper);
	nkeys = (lower - PAGEHDRSZ) / 2;
	/*
	 * LMDB keeps at least two keys in a branch and one in a leaf (an
	 * emptied tree has no root page) and asserts it.
	 */
	if (nkeys < (flags == P_BRANCH ? 2u : 1u))
		return bad(m, "page %" PRIu64 " has %u node(s)", pgno, nkeys);
	/*
	 * First every node's place: inside [upper, page end), of the size
	 * LMDB gives it (header, key, data or a page number, rounded to even),
	 * and none overlapping another.  LMDB moves and resizes nodes by
	 * those sizes when it changes a page, so a node pointing into another
	 * would make it move bytes past the page.
	 */
	memset(m->bytes, 0, m->psize / 8);
	for (unsigned i = 0; i < nkeys; i++) {
		uint16_t off = get_u16(p + PAGEHDRSZ + 2 * i);
		const uint8_t *node = p + off;
		uint64_t size, ksize;

		if (off < upper || (uint32_t)off + NODESIZE > m->psize)
			return bad(m, "page %" PRIu64 ": node %u is out of the "
				   "page", pgno, i);
		ksize = get_u16(node + 6);
		size = NODESIZE + ksize;
		if (flags == P_LEAF)
			size += get_u16(node + 4) & F_BIGDATA ? 8 :
				get_u16(node) | (uint64_t)get_u16(node + 2) << 16;
		size += size & 1;
		if (ksize > MAXKEY || (uint64_t)off + size > m->psize)
			return bad(m, "page %" PRIu64 ": node %u runs past the "
				   "page", pgno, i);
		for (uint64_t b = off; b < off + size; b++) {
			if (m->bytes[b / 8] & (1u << (b % 8)))
				return bad(m, "page %" PRIu64 ": node %u "
					   "overlaps another", pgno, i);
			m->bytes[b / 8] |= (uint8_t)(1u << (b % 8));
		}
	}
	/* Then what the nodes hold (and, below a branch, the children). */
	for (unsigned i = 0; i < nkeys; i++) {
		const uint8_t *node = p + get_u16(p + PAGEHDRSZ + 2 * i);

		if (flags == P_LEAF) {
			rc = leaf_node(m, p, node, pgno, t);
		} else {
			uint64_t child = get_u16(node) |
					 (uint64_t)get_u16(node + 2) << 16 |
					 (uint64_t)get_u16(node + 4) << 32;

			rc = walk(m, child, level + 1, depth, t);
		}
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- the file ----------------------------------------------------------- */

/*
 * Reads and checks meta page i (at i * psize; psize 0: the first, which
 * says the page size).  Returns 0 and its txnid and last page, or
 * KVT_ECORRUPT.
 */
static int meta_read(struct mv *m, int fd, unsigned i, uint64_t *txnid,
		     uint64_t *last, const uint8_t **dbs, uint8_t *buf)
{
	uint64_t off = (uint64_t)i * m->psize;
	const uint8_t *mt = buf + PAGEHDRSZ;
	ssize_t n = pread(fd, buf, PAGEHDRSZ + META_SIZE, (off_t)off);

	if (n < 0)
		return -errno;
	if (n != PAGEHDRSZ + META_SIZE)
		return bad(m, "it is truncated: %" PRIu64 " bytes, shorter "
			   "than its meta pages", m->size);
	if (get_u64(buf + PG_PGNO) != i ||
	    (get_u16(buf + PG_FLAGS) & ~(P_DIRTY | P_KEEP)) != P_META ||
	    get_u32(mt + META_MAGIC) != MDB_MAGIC_ ||
	    get_u32(mt + META_VERSION) != MDB_DATA_VERSION_)
		return bad(m, "meta page %u is damaged (not an LMDB file of "
			   "format %u)", i, MDB_DATA_VERSION_);
	*txnid = get_u64(mt + META_TXNID);
	*last = get_u64(mt + META_LAST_PG);
	*dbs = mt + META_DBS;
	return 0;
}

static int validate(struct mv *m, int fd)
{
	uint8_t b0[PAGEHDRSZ + META_SIZE], b1[PAGEHDRSZ + META_SIZE];
	const uint8_t *dbs0, *dbs1, *dbs;
	uint64_t t0, t1, l0, l1;
	int rc;

	m->psize = 4096; /* only for meta page 0's offset */
	if (m->size < 2 * (uint64_t)PAGEHDRSZ)
		return bad(m, "it is truncated to %" PRIu64 " bytes", m->size);
	if ((rc = meta_read(m, fd, 0, &t0, &l0, &dbs0, b0)))
		return rc;
	m->psize = get_u32(dbs0 + DB_PAD);
	if (m->psize < 512 || m->psize > 65536 || (m->psize & (m->psize - 1)))
		return bad(m, "meta page 0 gives a page size of %" PRIu32,
			   m->psize);
	if (m->size < 2 * (uint64_t)m->psize)
		return bad(m, "it is truncated: %" PRIu64 " bytes, shorter "
			   "than its two meta pages", m->size);
	if ((rc = meta_read(m, fd, 1, &t1, &l1, &dbs1, b1)))
		return rc;
	/* LMDB takes the page size from the meta page it uses. */
	if (get_u32(dbs1 + DB_PAD) != m->psize)
		return bad(m, "the meta pages disagree on the page size (%" PRIu32
			   ", %" PRIu32 ")", m->psize, get_u32(dbs1 + DB_PAD));
	/* LMDB uses the meta page of the later transaction. */
	dbs = t1 > t0 ? dbs1 : dbs0;
	m->npages = (t1 > t0 ? l1 : l0) + 1;
	if (m->npages < 2 || m->npages > m->size / m->psize)
		return bad(m, "it is truncated: %" PRIu64 " bytes, its index "
			   "needs %" PRIu64 " (%" PRIu64 " pages)", m->size,
			   m->npages * m->psize, m->npages);
	m->map = mmap(NULL, (size_t)(m->npages * m->psize), PROT_READ,
		      MAP_SHARED, fd, 0);
	if (m->map == MAP_FAILED) {
		m->map = NULL;
		return -errno;
	}
	m->seen = calloc((size_t)(m->npages / 8 + 1), 1);
	m->bytes = malloc(m->psize / 8);
	if (!m->seen || !m->bytes)
		return -ENOMEM;
	m->seen[0] |= 3; /* the meta pages */
	for (int d = 0; d < 2; d++) { /* FREE_DBI, then MAIN_DBI */
		const uint8_t *db = dbs + d * DB_SIZE;
		uint64_t root = get_u64(db + DB_ROOT);
		unsigned depth = get_u16(db + DB_DEPTH);

		/*
		 * The trees' flags shape how LMDB reads every record (a
		 * DUPSORT bit would make it take data for sub-pages): the
		 * free list's keys are integers, the main tree's plain.
		 */
		if (get_u16(db + DB_FLAGS) != (d ? 0 : MDB_INTEGERKEY_))
			return bad(m, "the %s tree has flags 0x%x",
				   d ? "main" : "free-list",
				   get_u16(db + DB_FLAGS));
		if (root == P_INVALID)
			continue;
		if (depth == 0 || depth > CURSOR_STACK)
			return bad(m, "the %s tree has depth %u",
				   d ? "main" : "free-list", depth);
		if ((rc = walk(m, root, 0, depth, d ? T_MAIN : T_FREE)))
			return rc;
	}
	/* A free page must not be in use (LMDB would overwrite it). */
	for (size_t i = 0; i < m->nfree; i++) {
		uint64_t pg = m->freepg[i];

		if (m->seen[pg / 8] & (1u << (pg % 8)))
			return bad(m, "page %" PRIu64 " is both free and in "
				   "use", pg);
		m->seen[pg / 8] |= (uint8_t)(1u << (pg % 8));
	}
	return 0;
}

int kvt_l3i_mdb_validate(const char *path, char *why, size_t why_len)
{
	struct mv m = { .why = why, .why_len = why_len };
	struct stat st;
	int fd, rc;

	if (why_len)
		why[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno; /* none yet: a new store */
	if (fstat(fd, &st)) {
		rc = -errno;
		close(fd);
		return rc;
	}
	m.size = (uint64_t)st.st_size;
	rc = validate(&m, fd);
	if (m.map)
		munmap((void *)m.map, (size_t)(m.npages * m.psize));
	free(m.seen);
	free(m.bytes);
	free(m.freepg);
	close(fd);
	return rc;
}
