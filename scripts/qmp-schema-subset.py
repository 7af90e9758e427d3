#!/usr/bin/env python3
"""Extracts from QEMU's `query-qmp-schema` reply the entries vmscope's QMP schema needs.

Usage: qmp-schema-subset.py REPLY.json > src/monitor/qmp/schema_7_2.json

REPLY.json is the reply line QEMU 7.2 printed for `{"execute": "query-qmp-schema"}`
(`{"return": [...]}`). Kept are the commands and events listed below (every one issue 4 asks
for; vmscope exposes only those whose command it implements) and every type they reach,
in QEMU's order and with QEMU's masked type names, one entry per line. vmscope computes the
closure again at run time for the commands it has.

To regenerate:
  printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"query-qmp-schema"}' \
    '{"execute":"quit"}' | qemu-system-x86_64 -display none -machine none -qmp stdio \
    | sed -n 3p > /tmp/reply.json
  scripts/qmp-schema-subset.py /tmp/reply.json > src/monitor/qmp/schema_7_2.json
"""
import json
import sys

COMMANDS = """qmp_capabilities query-version query-commands query-qmp-schema query-status
query-name query-kvm query-cpus-fast query-chardev query-block query-blockstats
query-block-jobs human-monitor-command stop cont system_reset system_powerdown quit
blockdev-snapshot-sync block-stream block-commit block-job-cancel block-job-complete
block-job-pause block-job-resume block-job-set-speed transaction""".split()
EVENTS = """SHUTDOWN POWERDOWN RESET STOP RESUME JOB_STATUS_CHANGE BLOCK_JOB_COMPLETED
BLOCK_JOB_CANCELLED BLOCK_JOB_ERROR BLOCK_JOB_READY BLOCK_JOB_PENDING""".split()


def references(entry):
    """The type names an entry refers to."""
    for key in ("arg-type", "ret-type", "element-type"):
        if key in entry:
            yield entry[key]
    for member in entry.get("members", []):
        if "type" in member:
            yield member["type"]
    for variant in entry.get("variants", []):
        yield variant["type"]


def main():
    schema = json.load(open(sys.argv[1]))["return"]
    by_name = {entry["name"]: entry for entry in schema}
    wanted = set()
    pending = COMMANDS + EVENTS
    while pending:
        name = pending.pop()
        if name in wanted:
            continue
        if name not in by_name:
            sys.exit(f"{name} is not in the schema")
        wanted.add(name)
        pending.extend(references(by_name[name]))
    print("[")
    kept = [entry for entry in schema if entry["name"] in wanted]
    for i, entry in enumerate(kept):
        print(json.dumps(entry) + ("," if i + 1 < len(kept) else ""))
    print("]")


main()
