#!/usr/bin/env python3
"""Writes the seed corpus of the kvtier fuzz harnesses (tests/fuzz/corpus/).

The frames are built the way client/kvt_client_io.c builds them (header with
request ids counting from 1, then the body from the same codecs, field for
field as in proto/PROTOCOL.md), so the seeds are the traffic a real client
sends, plus the daemon's replies, a few pipelined streams and a few
malformed ones.  Deterministic: running it again gives the same files.

    python3 tests/fuzz/gen_corpus.py [OUTDIR]   # default tests/fuzz/corpus

Inputs that libFuzzer found and `make fuzz FUZZ_MERGE=1` merged in live in
the same folders under their SHA-1 names; this script only (re)writes the
seed_* files.
"""
import os
import struct
import sys

MAGIC = b"KVTR"
VERSION = 1
REPLY = 0x8000
(HELLO, PING, PUT, GET, DEL, EXISTS, STATS, MATCH, DROP, HOT, PREFETCH, PIN,
 UNPIN) = range(1, 14)
REGISTER, UNREGISTER, MGET_TO, MPUT_FROM = range(17, 21)


def header(op, body_len, req_id, flags=0, status=0, version=VERSION,
           magic=MAGIC):
    return magic + struct.pack("<BBHQII", version, op, flags, req_id, status,
                               body_len)


def frame(op, body, req_id, **kw):
    return header(op, len(body), req_id, **kw) + body


def hello_req(version=1, features=0):
    return struct.pack("<II", version, features)


def hello_reply(max_key=1024, max_ns=255, max_value=256 << 20,
                max_body=None, version=1, features=0):
    if max_body is None:
        max_body = min(8 + max_key + max_ns + max_value, 0xffffffff)
    return struct.pack("<IIIIQQ", version, features, max_key, max_ns,
                       max_value, max_body)


def key_body(ns, key, reserved=0):
    return struct.pack("<BBH", len(ns), reserved, len(key)) + ns + key


def put_body(ns, key, value, dtype=0, ttl=0):
    return struct.pack("<BBHI", len(ns), dtype, len(key), ttl) + ns + key + \
        value


def match_body(ns, keys, count=None):
    out = struct.pack("<BBH", len(ns), 0,
                      len(keys) if count is None else count) + ns
    for k in keys:
        out += struct.pack("<H", len(k)) + k
    return out


def drop_body(ns, reserved=0):
    return struct.pack("<BBH", len(ns), 0, reserved) + ns


def hot_item(tier, ns, key, size, hits, ctime, atime):
    return struct.pack("<BBHIQQQQ", tier, len(ns), len(key), 0, size, hits,
                       ctime, atime) + ns + key


def hot_reply(now, items, count=None):
    return struct.pack("<IIQ", len(items) if count is None else count, 0,
                       now) + b"".join(items)


HOT_ITEMS = [hot_item(1, b"ns", b"a", 4096, 17, 1700000000, 1700000100),
             hot_item(3, b"", b"k1", 1 << 20, 2, 1700000000, 0)]


def fp16_block(n):
    """A small KV block: n fp16 values with a repeating pattern."""
    return b"".join(struct.pack("<H", 0x3c00 + (i * 37) % 512)
                    for i in range(n))


# Prefix keys as kvtier-prefix produces them: 32-byte digests.
BLOCK_KEYS = [bytes((i * 7 + j * 13) % 256 for j in range(32))
              for i in range(4)]


def frame_seeds():
    s = {}
    rid = iter(range(1, 1 << 30))
    # One request per file, as a client sends them after connecting.
    s["hello"] = frame(HELLO, hello_req(), next(rid))
    s["ping_empty"] = frame(PING, b"", next(rid))
    s["ping_body"] = frame(PING, b"kvtier ping 0123456789", next(rid))
    s["put_small"] = frame(PUT, put_body(b"", b"k1", b"v1"), next(rid))
    s["put_ns_fp16_ttl"] = frame(PUT, put_body(b"llama-7b", b"layer0/blk0",
                                               fp16_block(64), dtype=3,
                                               ttl=3600), next(rid))
    s["put_bf16_prefixkey"] = frame(PUT, put_body(b"m", BLOCK_KEYS[0],
                                                  fp16_block(32), dtype=2),
                                    next(rid))
    s["put_empty_value"] = frame(PUT, put_body(b"ns", b"empty", b""),
                                 next(rid))
    s["get"] = frame(GET, key_body(b"llama-7b", b"layer0/blk0"), next(rid))
    s["get_nons"] = frame(GET, key_body(b"", b"k1"), next(rid))
    s["del"] = frame(DEL, key_body(b"ns", b"k1"), next(rid))
    s["exists"] = frame(EXISTS, key_body(b"m", BLOCK_KEYS[1]), next(rid))
    s["stats"] = frame(STATS, b"", next(rid))
    s["match"] = frame(MATCH, match_body(b"ns", [b"a", b"bcd"]), next(rid))
    s["match_prefix"] = frame(MATCH, match_body(b"m", BLOCK_KEYS), next(rid))
    s["match_empty"] = frame(MATCH, match_body(b"", []), next(rid))
    s["drop"] = frame(DROP, drop_body(b"llama-7b"), next(rid))
    s["drop_nons"] = frame(DROP, drop_body(b""), next(rid))
    s["hot"] = frame(HOT, struct.pack("<I", 10), next(rid))
    s["prefetch"] = frame(PREFETCH, match_body(b"m", BLOCK_KEYS[:2]),
                          next(rid))
    s["pin"] = frame(PIN, match_body(b"ns", [b"a"]), next(rid))
    s["unpin"] = frame(UNPIN, match_body(b"ns", [b"a"]), next(rid))
    # Replies, as the client library decodes them.
    s["reply_hello"] = frame(HELLO, hello_reply(), 1, flags=REPLY)
    s["reply_get_fp16"] = frame(GET, fp16_block(16), 8, flags=REPLY | 3)
    s["reply_notfound"] = header(GET, 0, 9, flags=REPLY, status=1002)
    s["reply_match"] = frame(MATCH, struct.pack("<I", 2), 13, flags=REPLY)
    s["reply_drop"] = frame(DROP, struct.pack("<Q", 42), 16, flags=REPLY)
    s["reply_hot"] = frame(HOT, hot_reply(1700000200, HOT_ITEMS), 18,
                           flags=REPLY)
    s["reply_stats"] = frame(STATS, b'{"l1":{"entries":1,"bytes":2},'
                             b'"gets":3,"puts":1}', 12, flags=REPLY)
    # Pipelined sessions: several requests in one stream.
    s["pipe_session"] = b"".join([
        frame(HELLO, hello_req(), 1),
        frame(PUT, put_body(b"ns", b"a", b"1" * 10, dtype=1), 2),
        frame(PUT, put_body(b"ns", b"b", fp16_block(8), dtype=3), 3),
        frame(GET, key_body(b"ns", b"a"), 4),
        frame(EXISTS, key_body(b"ns", b"b"), 5),
        frame(MATCH, match_body(b"ns", [b"a", b"b", b"c"]), 6),
        frame(DEL, key_body(b"ns", b"a"), 7),
        frame(STATS, b"", 8),
    ])
    s["pipe_pings"] = b"".join(frame(PING, bytes([i]) * i, i + 1)
                               for i in range(6))
    s["pipe_replies"] = b"".join([
        frame(HELLO, hello_reply(), 1, flags=REPLY),
        header(PUT, 0, 2, flags=REPLY),
        frame(GET, b"1" * 10, 3, flags=REPLY | 1),
        header(DEL, 0, 4, flags=REPLY, status=1002),
        frame(MATCH, struct.pack("<I", 1), 5, flags=REPLY),
    ])
    s["pipe_then_truncated"] = frame(GET, key_body(b"", b"x"), 1) + \
        frame(PUT, put_body(b"", b"y", b"value"), 2)[:-3]
    # Malformed: what the daemon must reject without trusting lengths.
    s["bad_magic"] = frame(GET, key_body(b"", b"k"), 1, magic=b"KVTX")
    s["bad_magic_http"] = b"GET / HTTP/1.1\r\nHost: kvtier\r\n\r\n"
    s["bad_version"] = frame(PING, b"hi", 7, version=2)
    s["truncated_header"] = frame(PING, b"", 1)[:17]
    s["truncated_body"] = frame(PUT, put_body(b"ns", b"k", b"v" * 40),
                                1)[:50]
    s["oversized_len"] = header(PUT, 0xffffffff, 1) + b"\0" * 8
    s["len_over_cap"] = header(PING, (1 << 20) + 1, 1) + b"x" * 16
    s["unknown_op"] = frame(200, b"\x01\x02", 3)
    s["put_bad_dtype"] = frame(PUT, put_body(b"", b"k", b"v", dtype=9), 1)
    s["put_keylen_past_end"] = frame(
        PUT, struct.pack("<BBHI", 0, 0, 500, 0) + b"k", 1)
    s["key_trailing"] = frame(GET, key_body(b"", b"k") + b"!", 1)
    s["key_reserved"] = frame(DEL, key_body(b"", b"k", reserved=1), 1)
    s["key_empty"] = frame(EXISTS, key_body(b"ns", b""), 1)
    s["match_count_big"] = frame(MATCH, match_body(b"", [b"a"], count=4097),
                                 1)
    s["match_short"] = frame(MATCH, match_body(b"", [b"abc"])[:-1], 1)
    s["hello_short"] = frame(HELLO, b"\x01\0\0", 1)
    s["hello_reply_bad"] = frame(HELLO, hello_reply(max_key=0), 1,
                                 flags=REPLY)
    s["drop_reserved"] = frame(DROP, drop_body(b"n", reserved=1), 1)
    s["hot_zero"] = frame(HOT, struct.pack("<I", 0), 1)
    s["register"] = frame(REGISTER, reg_req(0, 1 << 20), 1)
    s["reply_register"] = frame(REGISTER, reg_reply(), 1, flags=REPLY)
    s["unregister"] = frame(UNREGISTER, unreg_req(1), 1)
    s["mget_to"] = frame(MGET_TO, xfer_body(
        b"llama3-8b/bf16/tp0", sglang_pages(4, 1 << 20, 1 << 30)), 1)
    s["mput_from"] = frame(MPUT_FROM, xfer_body(
        b"m", sglang_pages(2, 4096, 1 << 20), put=True, dtype=2), 1)
    s["reply_mget_to"] = frame(MGET_TO, xfer_reply([
        xfer_result(0, 2, 0, 2 << 20), xfer_result(1),
        xfer_result(3, 0, 1018)]), 1, flags=REPLY)
    s["mget_to_bad"] = frame(MGET_TO, xfer_body(b"", [(b"k", [
        seg(0, 0, 1)])]), 1)
    s["session_regmem"] = (frame(HELLO, hello_req(), 1) +
                           frame(REGISTER, reg_req(), 2) +
                           frame(MPUT_FROM, xfer_body(b"n", sglang_pages(
                               2, 512, 4096), put=True), 3) +
                           frame(MGET_TO, xfer_body(b"n", sglang_pages(
                               2, 512, 4096)), 4) +
                           frame(UNREGISTER, unreg_req(1), 5))
    s["reply_hot_short_item"] = frame(HOT, hot_reply(1, HOT_ITEMS)[:-1], 1,
                                      flags=REPLY)
    return s


def bodies_seeds():
    """Byte 0 selects the parser (fuzz_bodies.c), bit 4 small limits."""
    PUT_, KEY_, HREQ, HREP, MREQ, MREP, DREQ, DREP, TREQ, TREP = range(10)
    SMALL = 16
    s = {}
    s["put_small"] = bytes([PUT_]) + put_body(b"", b"k1", b"v1")
    s["put_fp16_ttl"] = bytes([PUT_]) + put_body(b"llama-7b", b"layer0/blk0",
                                                 fp16_block(32), 3, 3600)
    s["put_prefixkey"] = bytes([PUT_]) + put_body(b"m", BLOCK_KEYS[0],
                                                  b"\0" * 16, 2)
    s["put_small_limits"] = bytes([PUT_ | SMALL]) + put_body(b"n", b"key",
                                                             b"v" * 16, 1)
    s["put_too_big_small"] = bytes([PUT_ | SMALL]) + put_body(b"ns",
                                                              b"k" * 9, b"")
    s["put_bad_dtype"] = bytes([PUT_]) + put_body(b"", b"k", b"", 5)
    s["put_short"] = bytes([PUT_]) + put_body(b"", b"k", b"")[:7]
    s["key_get"] = bytes([KEY_]) + key_body(b"llama-7b", b"layer0/blk0")
    s["key_nons"] = bytes([KEY_]) + key_body(b"", b"x")
    s["key_prefix"] = bytes([KEY_]) + key_body(b"m", BLOCK_KEYS[2])
    s["key_small_limits"] = bytes([KEY_ | SMALL]) + key_body(b"ab", b"k" * 8)
    s["key_trailing"] = bytes([KEY_]) + key_body(b"", b"k") + b"\0"
    s["key_reserved"] = bytes([KEY_]) + key_body(b"", b"k", 1)
    s["hello_req"] = bytes([HREQ]) + hello_req()
    s["hello_req_longer"] = bytes([HREQ]) + hello_req(2, 1) + b"future"
    s["hello_req_short"] = bytes([HREQ]) + hello_req()[:5]
    s["hello_reply"] = bytes([HREP]) + hello_reply()
    s["hello_reply_small"] = bytes([HREP]) + hello_reply(8, 2, 16)
    s["hello_reply_bad_ns"] = bytes([HREP]) + hello_reply(max_ns=256)
    s["hello_reply_bad_body"] = bytes([HREP]) + hello_reply(
        max_body=1 << 32)
    s["match_doc_example"] = bytes([MREQ]) + match_body(b"ns", [b"a", b"bcd"])
    s["match_prefix"] = bytes([MREQ]) + match_body(b"m", BLOCK_KEYS)
    s["match_zero"] = bytes([MREQ]) + match_body(b"", [])
    s["match_small_limits"] = bytes([MREQ | SMALL]) + match_body(
        b"ab", [b"k" * 8, b"k" * 9])
    s["match_trailing"] = bytes([MREQ]) + match_body(b"", [b"a"]) + b"\0"
    s["match_count_big"] = bytes([MREQ]) + match_body(b"", [], 4097)
    s["match_empty_key"] = bytes([MREQ]) + match_body(b"", [b"a", b""])
    s["match_reply"] = bytes([MREP]) + struct.pack("<I", 3)
    s["match_reply_longer"] = bytes([MREP]) + struct.pack("<II", 3, 7)
    s["match_reply_short"] = bytes([MREP]) + b"\x01\x00"
    s["drop"] = bytes([DREQ]) + drop_body(b"llama-7b")
    s["drop_nons"] = bytes([DREQ]) + drop_body(b"")
    s["drop_small_limits"] = bytes([DREQ | SMALL]) + drop_body(b"abc")
    s["drop_trailing"] = bytes([DREQ]) + drop_body(b"n") + b"\0"
    s["drop_reply"] = bytes([DREP]) + struct.pack("<Q", 42)
    s["hot_req"] = bytes([TREQ]) + struct.pack("<I", 10)
    s["hot_req_too_big"] = bytes([TREQ]) + struct.pack("<I", 1001)
    s["hot_reply"] = bytes([TREP]) + hot_reply(1700000200, HOT_ITEMS)
    s["hot_reply_empty"] = bytes([TREP]) + hot_reply(5, [])
    s["hot_reply_bad_tier"] = bytes([TREP]) + hot_reply(
        5, [hot_item(4, b"", b"k", 1, 1, 1, 1)])
    return s


# --- registered memory (proto/kvt_reg.h, PROTOCOL.md "Registered memory") ---

def reg_req(offset=0, length=0, flags=0, reserved=0):
    return struct.pack("<QQII", offset, length, flags, reserved)


def reg_reply(region=1, flags=2, length=1 << 20):
    return struct.pack("<IIQ", region, flags, length)


def unreg_req(region=1, reserved=0):
    return struct.pack("<II", region, reserved)


def seg(region, offset, length, reserved=0):
    return struct.pack("<IIQQ", region, reserved, offset, length)


def xfer_body(ns, keys, put=False, dtype=0, ttl=0, count=None):
    """keys: list of (key, [segments])."""
    n = len(keys) if count is None else count
    if put:
        out = struct.pack("<BBHI", len(ns), dtype, n, ttl) + ns
    else:
        out = struct.pack("<BBH", len(ns), dtype, n) + ns
    for k, segs in keys:
        out += struct.pack("<H", len(k)) + k + struct.pack("<H", len(segs))
        out += b"".join(segs)
    return out


def xfer_result(status, dtype=0, code=0, length=0, reserved=0):
    return struct.pack("<BBHIQ", status, dtype, reserved, code, length)


def xfer_reply(results, count=None):
    n = len(results) if count is None else count
    return struct.pack("<II", n, 0) + b"".join(results)


def sglang_pages(n, half, vbase, region=1):
    """n MHA pages as SGLang lays them out: K half, then V half apart."""
    return [(BLOCK_KEYS[i % len(BLOCK_KEYS)][:31] + bytes([i]),
             [seg(region, i * half, half),
              seg(region, vbase + i * half, half)]) for i in range(n)]


def reg_seeds():
    """Byte 0 selects the parser (fuzz_reg.c), bit 4 small limits."""
    RREQ, RREP, UNREG, GETTO, PUTFROM, XREP = range(6)
    SMALL = 16
    s = {}
    s["reg"] = bytes([RREQ]) + reg_req(4096, 1 << 20)
    s["reg_whole_file"] = bytes([RREQ]) + reg_req()
    s["reg_readonly"] = bytes([RREQ]) + reg_req(0, 65536, 1)
    s["reg_bad_flag"] = bytes([RREQ]) + reg_req(0, 1, 2)
    s["reg_reserved"] = bytes([RREQ]) + reg_req(reserved=1)
    s["reg_wraps"] = bytes([RREQ]) + reg_req(2 ** 64 - 10, 11)
    s["reg_short"] = bytes([RREQ]) + reg_req()[:23]
    s["reg_reply"] = bytes([RREP]) + reg_reply()
    s["reg_reply_longer"] = bytes([RREP]) + reg_reply(3, 1) + b"future"
    s["reg_reply_zero"] = bytes([RREP]) + reg_reply(0)
    s["reg_reply_flags"] = bytes([RREP]) + reg_reply(1, 4)
    s["unreg"] = bytes([UNREG]) + unreg_req(7)
    s["unreg_zero"] = bytes([UNREG]) + unreg_req(0)
    s["unreg_reserved"] = bytes([UNREG]) + unreg_req(1, 1)
    s["get_doc"] = bytes([GETTO]) + xfer_body(b"m1", [(b"p0", [
        seg(1, 0, 1 << 20), seg(1, 1 << 30, 1 << 20)])])
    s["get_sglang"] = bytes([GETTO]) + xfer_body(
        b"llama3-8b/bf16/tp0", sglang_pages(8, 1 << 20, 1 << 30))
    s["get_mla"] = bytes([GETTO]) + xfer_body(b"dsv3", [
        (b"k%d" % i, [seg(2, i * 4096, 4096)]) for i in range(6)])
    s["get_layer_first"] = bytes([GETTO]) + xfer_body(b"lf", [
        (b"page", [seg(1, l * 65536, 512) for l in range(2 * 40)])])
    s["get_empty"] = bytes([GETTO]) + xfer_body(b"", [])
    s["get_no_segs"] = bytes([GETTO]) + xfer_body(b"", [(b"k", [])])
    s["get_region0"] = bytes([GETTO]) + xfer_body(b"", [(b"k", [
        seg(0, 0, 1)])])
    s["get_seg_wraps"] = bytes([GETTO]) + xfer_body(b"", [(b"k", [
        seg(1, 2 ** 64 - 1, 2)])])
    s["get_total_saturates"] = bytes([GETTO]) + xfer_body(b"", [(b"k", [
        seg(1, 0, 2 ** 63), seg(1, 0, 2 ** 63), seg(1, 0, 5)])])
    s["get_seg_reserved"] = bytes([GETTO]) + xfer_body(b"", [(b"k", [
        seg(1, 0, 1, 1)])])
    s["get_dtype"] = bytes([GETTO]) + xfer_body(b"", [(b"k", [])], dtype=2)
    s["get_count_big"] = bytes([GETTO]) + xfer_body(b"", [], count=4097)
    s["get_too_many_segs"] = bytes([GETTO]) + xfer_body(b"", [
        (b"k", [seg(1, 0, 1)] * 513)])
    s["get_trailing"] = bytes([GETTO]) + xfer_body(b"", [(b"k", [])]) + \
        b"\0"
    s["get_cut"] = bytes([GETTO]) + xfer_body(b"", [(b"k", [
        seg(1, 0, 8)])])[:-3]
    s["get_empty_key"] = bytes([GETTO]) + xfer_body(b"", [(b"", [])])
    s["get_small_limits"] = bytes([GETTO | SMALL]) + xfer_body(b"ab", [
        (b"k" * 8, [seg(1, 0, 8)]), (b"k" * 9, [])])
    s["put_sglang"] = bytes([PUTFROM]) + xfer_body(
        b"llama3-8b/bf16/tp0", sglang_pages(4, 1 << 20, 1 << 30), put=True,
        dtype=2, ttl=600)
    s["put_bad_dtype"] = bytes([PUTFROM]) + xfer_body(b"", [], put=True,
                                                      dtype=5)
    s["put_small_value"] = bytes([PUTFROM | SMALL]) + xfer_body(
        b"", [(b"k", [seg(1, 0, 40), seg(1, 100, 24)])], put=True)
    s["put_value_big"] = bytes([PUTFROM | SMALL]) + xfer_body(
        b"", [(b"k", [seg(1, 0, 40), seg(1, 100, 25)])], put=True)
    s["put_short"] = bytes([PUTFROM]) + xfer_body(b"", [], put=True)[:7]
    s["reply"] = bytes([XREP]) + xfer_reply([
        xfer_result(0, 2, 0, 2 << 20), xfer_result(1),
        xfer_result(2, 2, 0, 77), xfer_result(3, 0, 1018)])
    s["reply_empty"] = bytes([XREP]) + xfer_reply([])
    s["reply_count_off"] = bytes([XREP]) + xfer_reply([xfer_result(1)], 2)
    s["reply_bad_status"] = bytes([XREP]) + xfer_reply([xfer_result(4)])
    s["reply_code_no_error"] = bytes([XREP]) + xfer_reply([
        xfer_result(0, 0, 5)])
    s["reply_error_no_code"] = bytes([XREP]) + xfer_reply([xfer_result(3)])
    s["reply_reserved"] = bytes([XREP]) + xfer_reply([
        xfer_result(1, reserved=1)])
    return s


def size_seeds():
    # Sizes as they appear in etc/kvtierd.conf and on command lines.
    values = ["0", "512", "1000", "4096", "64M", "2G", "512K", "1T", "64MiB",
              "64mb", "8 GiB", "  16k  ", "512 B", "1kib", "100b",
              "18446744073709551615", "18446744073709551616", "16777216T",
              "16777215T", "-1", "+5", "0x10", "1.5G", "64Mi", "1P", "",
              "K", "12 34", "7ib", "3GB\n",
              # Just under a unit: the formatter rounds up into the next one.
              "1048575", "1073741823"]
    return {"v%02d" % i: v.encode() for i, v in enumerate(values)}


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus")
    for name, seeds in (("fuzz_frame", frame_seeds()),
                        ("fuzz_bodies", bodies_seeds()),
                        ("fuzz_reg", reg_seeds()),
                        ("fuzz_size", size_seeds())):
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if f.startswith("seed_"):
                os.unlink(os.path.join(d, f))
        for key, data in sorted(seeds.items()):
            with open(os.path.join(d, "seed_" + key), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
