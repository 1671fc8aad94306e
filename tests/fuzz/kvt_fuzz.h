/*
 * kvt_fuzz.h - the entry point every harness in tests/fuzz/ defines.
 *
 * Built two ways: with clang -fsanitize=fuzzer, libFuzzer supplies main()
 * and generates inputs (`make fuzz`); with the project's compiler and
 * replay_main.c, the stored corpus is run once per input (`make test`), so
 * that a regression is caught on machines without libFuzzer.
 */
#ifndef KVT_FUZZ_H
#define KVT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Runs one input; returns 0 (libFuzzer reserves other values). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * A broken invariant is reported with its line and aborts, so libFuzzer
 * records the input as a crash and the replay binary fails.  Not assert():
 * the check must stay on in builds with NDEBUG.
 */
#define KVT_FUZZ_CHECK(cond)                                                  \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: check failed: %s\n",          \
				__FILE__, __LINE__, #cond);                   \
			abort();                                              \
		}                                                             \
	} while (0)

#endif /* KVT_FUZZ_H */
