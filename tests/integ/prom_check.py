#!/usr/bin/env python3
"""Strict check of Prometheus text exposition format (version 0.0.4) on stdin.

Every line must be a HELP or TYPE comment or a sample; metric and label
names must be valid; a family's HELP and TYPE come once, before its
samples; samples of a family are contiguous; values parse as floats;
summary families may only have quantile samples plus _sum and _count.
Exits 0 and prints the number of samples, or 1 with the first problem.
"""
import re
import sys

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s)(?:,%s)*\})? (\S+)$" % (NAME, LABEL, LABEL))
HELP = re.compile(r"^# HELP (%s) .+$" % NAME)
TYPE = re.compile(r"^# TYPE (%s) (counter|gauge|summary|histogram|untyped)$" % NAME)


def family(name, types):
    for suffix in ("_sum", "_count", "_bucket"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and types.get(base) in ("summary", "histogram"):
            return base
    return name


def main():
    helps, types, done, samples = set(), {}, set(), 0
    current = None
    text = sys.stdin.read()
    if not text.endswith("\n"):
        return "output does not end with a newline"
    for n, line in enumerate(text.splitlines(), 1):
        if m := HELP.match(line):
            if m.group(1) in helps:
                return "line %d: second HELP for %s" % (n, m.group(1))
            helps.add(m.group(1))
            continue
        if m := TYPE.match(line):
            if m.group(1) in types:
                return "line %d: second TYPE for %s" % (n, m.group(1))
            types[m.group(1)] = m.group(2)
            continue
        if line.startswith("#") or not line:
            return "line %d: not a valid comment or sample: %r" % (n, line)
        m = SAMPLE.match(line)
        if not m:
            return "line %d: malformed sample: %r" % (n, line)
        fam = family(m.group(1), types)
        if fam not in types or fam not in helps:
            return "line %d: sample of %s before its HELP/TYPE" % (n, fam)
        if fam != current:
            if fam in done:
                return "line %d: samples of %s are not contiguous" % (n, fam)
            if current:
                done.add(current)
            current = fam
        if types[fam] == "summary" and m.group(1) == fam and "quantile=" not in (m.group(2) or ""):
            return "line %d: summary sample without quantile" % n
        if types[fam] == "counter" and not fam.endswith("_total"):
            return "line %d: counter %s should end in _total" % (n, fam)
        try:
            float(m.group(3))
        except ValueError:
            return "line %d: bad value %r" % (n, m.group(3))
        samples += 1
    if samples == 0:
        return "no samples"
    print("prometheus text ok: %d samples, %d families" % (samples, len(types)))
    return None


if __name__ == "__main__":
    problem = main()
    if problem:
        print("prom_check: " + problem)
        sys.exit(1)
